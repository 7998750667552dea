"""save_npz / load_npz and Layer.save / load / state_dict: round trips, atomic writes, clear errors."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_rnn import layers as L
from tinygrad_rnn import serialization


def _model(seed=0, hidden=4):
    model = L.Layer()
    model.embed = L.Embedding(7, hidden, seed=seed)
    model.lstm = L.LSTM(hidden, hidden, num_layers=2, seed=seed)
    model.out = L.TiedLinear(model.embed)
    return model


def test_save_npz_round_trips_arrays_with_paths_and_metadata(tmp_path):
    path = tmp_path / "state.npz"
    arrays = {"lstm/cell0/Wx": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(7)}
    meta = {"epoch": 3, "lr": 0.5, "name": "lstm \u00e9"}
    serialization.save_npz(path, arrays, meta)
    loaded, loaded_meta = serialization.load_npz(path)
    assert loaded.keys() == arrays.keys() and loaded_meta == meta
    for k, value in arrays.items():
        np.testing.assert_array_equal(loaded[k], value)
        assert loaded[k].dtype == value.dtype
    assert serialization.load_npz(path)[1] == meta
    serialization.save_npz(path, arrays)
    assert serialization.load_npz(path)[1] is None


def test_save_leaves_no_temporary_file(tmp_path):
    serialization.save_npz(tmp_path / "a.npz", {"x": np.ones(3)})
    _model().save(tmp_path / "model.npz")
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "model.npz"]


def test_a_failing_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "state.npz"
    with pytest.raises(ValueError):
        serialization.save_npz(path, {"x": np.ones(3), "bad": np.array([object()])})
    assert os.listdir(tmp_path) == []
    serialization.save_npz(path, {"x": np.ones(3)})
    with pytest.raises(ValueError):
        serialization.save_npz(path, {"x": np.zeros(3), "bad": np.array([object()])})
    assert os.listdir(tmp_path) == ["state.npz"]
    np.testing.assert_array_equal(serialization.load_npz(path)[0]["x"], np.ones(3))


def test_save_npz_rejects_the_reserved_name_and_unserializable_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        serialization.save_npz(tmp_path / "a.npz", {serialization.META_KEY: np.ones(1)})
    with pytest.raises(TypeError):
        serialization.save_npz(tmp_path / "a.npz", {"x": np.ones(1)}, meta={"f": object()})
    assert os.listdir(tmp_path) == []


def test_layer_save_load_round_trip_restores_every_parameter(tmp_path):
    source, target = _model(seed=1), _model(seed=2)
    path = tmp_path / "model.npz"
    source.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain npz, readable without pickle
        assert sorted(z.files) == sorted(name for name, _ in source.namedparams())
    target.load(path)
    for (name, p), (_, q) in zip(source.namedparams(), target.namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        assert q.dtype == np.float32
    assert target.out.W is target.embed.W  # loading keeps the tie


def test_state_dict_maps_paths_to_parameter_arrays():
    model = _model()
    state = model.state_dict()
    assert list(state) == ["embed/W", "lstm/cell0/Wx", "lstm/cell0/Wh", "lstm/cell0/b",
                           "lstm/cell1/Wx", "lstm/cell1/Wh", "lstm/cell1/b", "out/b"]
    assert state["embed/W"] is model.embed.W.data


def test_load_state_dict_copies_and_casts_to_the_parameter_dtype():
    model = _model()
    state = {k: v.astype(np.float64) + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model.embed.W.dtype == np.float32
    np.testing.assert_allclose(model.embed.W.data, state["embed/W"], rtol=1e-6)
    state["embed/W"][...] = 0
    assert model.embed.W.data.any()


def test_load_with_wrong_names_or_shapes_raises_naming_them_and_changes_nothing():
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = _model(seed=3).state_dict()
    del state["lstm/cell1/Wh"]
    state["lstm/cell2/Wh"] = np.zeros((4, 16), np.float32)
    state["out/b"] = np.zeros(8, np.float32)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "missing lstm/cell1/Wh" in message
    assert "unexpected lstm/cell2/Wh" in message
    assert "out/b (expected (7,), got (8,))" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_of_a_file_from_another_architecture_raises(tmp_path):
    path = tmp_path / "small.npz"
    _model(hidden=4).save(path)
    with pytest.raises(ValueError, match=r"shape mismatch embed/W \(expected \(7, 5\), got \(7, 4\)\)"):
        _model(hidden=5).load(path)


def test_a_write_is_flushed_to_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.path.isdir(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    serialization.save_npz(tmp_path / "a.npz", {"x": np.ones(3)})
    assert synced == [False, True]  # the file, then its directory (the rename)


def test_a_crashed_write_leaves_no_temporary_file_after_the_next_start(tmp_path):
    target = tmp_path / "last.npz"
    code = ("import os, signal, sys; from tinygrad_rnn.serialization import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n    f.write(b'partial')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True)
    assert done.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".last.npz.") and left[0].endswith(".tmp")  # the crash's remains
    serialization.save_npz(target, {"x": np.ones(2)})  # the next write to that file cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_a_running_writers_temporary_file_is_left_alone(tmp_path):
    mine = tmp_path / f".last.npz.{os.getpid()}.{'0' * 16}.tmp"  # this process is alive: not abandoned
    mine.write_bytes(b"being written")
    serialization.save_npz(tmp_path / "last.npz", {"x": np.ones(2)})
    assert mine.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY broken", b"random bytes " * 20])
def test_a_damaged_file_gives_one_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path} is not a tinygrad_rnn checkpoint") as info:
        serialization.load_npz(path)
    assert "allow_pickle" not in str(info.value)  # never the advice to load pickled objects
    with pytest.raises(ValueError, match="is not a tinygrad_rnn checkpoint"):
        _model().load(path)
    with pytest.raises(FileNotFoundError):
        serialization.load_npz(tmp_path / "missing.npz")


def test_a_plain_npy_file_is_refused_by_name(tmp_path):
    path = tmp_path / "weights.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(ValueError, match="weights.npz is not a tinygrad_rnn checkpoint: it holds a single array"):
        serialization.load_npz(path)


def test_json_stays_valid_with_infinities_and_numpy_numbers(tmp_path):
    value = {"ppl": float("inf"), "neg": -math.inf, "nan": math.nan, "n": np.int64(3), "x": [np.float32(0.5)]}
    serialization.write_json(tmp_path / "h.json", value)
    text = (tmp_path / "h.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) == {
        "ppl": "inf", "neg": "-inf", "nan": "nan", "n": 3, "x": [0.5]}
    assert float("inf") == float(json.loads(text)["ppl"])  # float() reads it back
    serialization.save_npz(tmp_path / "m.npz", {"a": np.ones(1)}, meta=value)
    assert serialization.load_npz(tmp_path / "m.npz")[1]["ppl"] == "inf"


def test_load_state_dict_changes_nothing_when_one_entry_is_not_numeric():
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["out/b"] = np.array(["a"] * 7)
    with pytest.raises(ValueError, match="out/b holds <U1 data, not numbers"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_writing_into_a_missing_folder_or_objects_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"the folder {tmp_path / 'nope'} does not exist"):
        serialization.save_npz(tmp_path / "nope" / "a.npz", {"x": np.ones(1)})
    with pytest.raises(ValueError, match="save_npz: bad hold Python objects"):
        serialization.save_npz(tmp_path / "a.npz", {"x": np.ones(1), "bad": np.array([object()])})
