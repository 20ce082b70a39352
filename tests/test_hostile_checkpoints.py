"""Hostile and damaged checkpoints: every one is refused with CheckpointError naming the file and the
problem, before the model it describes is built."""
import os
import resource

import pytest
import torch

from kit import TINY
from mart_upstream.checkpoint import (CheckpointError, content_hash, load_pretrained, read_checkpoint,
                                      save_checkpoint, write_state)
from mart_upstream.models import build_model


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model("simclr", TINY["simclr"])
    path = str(tmp_path / "simclr.ckpt")
    save_checkpoint(path, model, "simclr", step=3, optimizer=torch.optim.Adam(model.parameters()))
    return path


def _state(path):
    return torch.load(path, weights_only=True)


def _refused(path, *words):
    with pytest.raises(CheckpointError) as e:
        load_pretrained(path)
    message = str(e.value)
    assert path in message
    for w in words:
        assert w in message, message
    return message


def test_a_written_checkpoint_carries_a_hash_and_loads(ckpt):
    state = _state(ckpt)
    assert state["sha256"] == content_hash(state)
    model, _ = load_pretrained(ckpt)
    assert not model.training


def test_flipped_bytes_are_detected(ckpt):
    data = bytearray(open(ckpt, "rb").read())
    # flip bytes inside the largest tensor's storage (the end of the file holds the zip directory)
    start = len(data) // 3
    for i in range(start, start + 512):
        data[i] ^= 0x5A
    open(ckpt, "wb").write(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(ckpt)
    assert ckpt in str(e.value)


def test_changed_weight_without_a_new_hash_is_damage(ckpt):
    state = _state(ckpt)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] * 1e6
    torch.save(state, ckpt)  # the stored sha256 is the old one
    _refused(ckpt, "damaged", "sha256")


def test_nan_weights_are_refused_even_with_a_valid_hash(ckpt):
    state = _state(ckpt)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    write_state(ckpt, state)
    _refused(ckpt, name, "NaN")


def test_crafted_config_is_refused_before_the_model_is_built(ckpt):
    """A few-MB file whose config asks for ~10 GB of weights: refused, and nothing like it allocated."""
    state = _state(ckpt)
    state["config"]["encoder"]["channels"] = [4096] * 3 + [65536]
    write_state(ckpt, state)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(ckpt, "shape")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"the loader grew by {grown_mb:.0f} MB"


@pytest.mark.parametrize("change, words", [
    ({"format_version": "1"}, ["format_version"]),
    ({"format_version": None}, ["format_version"]),
    ({"model_name": "wav2vec"}, ["unknown model", "wav2vec"]),
    ({"model_name": 3}, ["model_name"]),
    ({"config": "nope"}, ["config"]),
    ({"step": -1}, ["negative"]),
    ({"optimizer": [1, 2]}, ["optimizer"]),
])
def test_malformed_fields_are_refused(ckpt, change, words):
    state = _state(ckpt)
    state.update(change)
    write_state(ckpt, state) if change.get("format_version", 3) == 3 else torch.save(state, ckpt)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(ckpt)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("key", ["model_name", "config", "model", "step"])
def test_missing_keys_are_refused(ckpt, key):
    state = _state(ckpt)
    del state[key]
    write_state(ckpt, state)
    _refused(ckpt, key)


@pytest.mark.parametrize("config_change, words", [
    ({"proj_dim": 99}, ["shape"]),
    ({"temperature": "warm"}, ["temperature", "number"]),
    ({"bogus": 1}, ["bogus"]),
    ({"frontend": {"n_fft": 1 << 30}}, ["n_fft"]),
    ({"clip_samples": 10 ** 12}, ["clip_samples"]),
])
def test_config_not_matching_or_invalid_is_refused(ckpt, config_change, words):
    state = _state(ckpt)
    for k, v in config_change.items():
        if isinstance(v, dict):
            state["config"][k].update(v)
        else:
            state["config"][k] = v
    write_state(ckpt, state)
    _refused(ckpt, *words)


def test_a_weight_that_is_not_a_tensor_is_refused(ckpt):
    state = _state(ckpt)
    state["model"][next(iter(state["model"]))] = [1.0, 2.0]
    write_state(ckpt, state)
    _refused(ckpt, "not a tensor")


def test_older_checkpoints_without_a_hash_still_load(ckpt):
    state = _state(ckpt)
    del state["sha256"]
    state["format_version"] = 2
    torch.save(state, ckpt)
    model, config = load_pretrained(ckpt)
    assert model.model_name == "simclr" and not model.training and read_checkpoint(ckpt)["step"] == 3
    loaded = model.state_dict()
    assert set(loaded) == set(state["model"])
    for name, value in state["model"].items():  # the weights as stored, not a fresh initialisation
        assert torch.equal(loaded[name], value), name


def test_write_state_renews_the_hash(ckpt, tmp_path):
    state = _state(ckpt)
    state["pretrain"] = {"note": "re-exported"}
    out = str(tmp_path / "again.ckpt")
    write_state(out, state)
    assert read_checkpoint(out)["pretrain"] == {"note": "re-exported"}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
