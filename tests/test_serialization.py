"""save_npz / load_npz and Layer.save / load / state_dict: round trips, atomic writes, clear errors."""
import os

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
