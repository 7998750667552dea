"""Models built only from the public API of tinygrad_rnn."""
