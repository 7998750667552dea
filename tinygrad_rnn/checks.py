"""Checks of the arguments of public entry points: the value back, or an error naming who asks, the argument
and the value."""
import math
import numbers


def number(where, name, value, low=None, high=None, low_open=False, high_open=True):
    """Check that a hyper-parameter is a finite real number in a range.

    Args:
        where (str): who asks, for the message (``"Adam"``).
        name (str): the argument.
        value (object): what was given.
        low (float, optional): the lower bound.
        high (float, optional): the upper bound.
        low_open (bool): whether ``low`` is excluded.
        high_open (bool): whether ``high`` is excluded.
    Returns:
        float: ``value``.
    Raises:
        TypeError: not a real number (bools included).
        ValueError: not finite, or out of range; the message gives the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        left = "any" if low is None else f"{'(' if low_open else '['}{low:g}"
        right = "" if high is None else f", {high:g}{')' if high_open else ']'}"
        wanted = f"in {left}{right}" if high is not None else (f"> {low:g}" if low_open else f">= {low:g}")
        raise ValueError(f"{where}: {name} must be a finite number {wanted}, got {value!r}")
    return value


def integer(where, name, value, low=1):
    """Check that an argument is an integer of at least ``low``.

    Args:
        where (str): who asks, for the message (``"BPTTBatcher"``).
        name (str): the argument.
        value (object): what was given.
        low (int): the smallest allowed value.
    Returns:
        int: ``value``.
    Raises:
        TypeError: not an integer (bools and floats included).
        ValueError: below ``low``.
    """
    wanted = "a positive integer" if low == 1 else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be {wanted}, got {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")
    return int(value)
