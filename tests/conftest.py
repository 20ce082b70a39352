import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mart_upstream.models import model_names, tiny_config  # noqa: E402

# Tiny model configs: the real architectures, narrowed and shortened so CPU tests stay fast (each
# model states its own: ``tiny_config`` on its class).
TINY = {name: tiny_config(name) for name in model_names()}


def tree_hashes(root):
    """sha256 of every file under ``root``, by relative path (same seed, same bytes)."""
    import hashlib

    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def write_checkpoint(path, name, config=None, seed=0):
    """An untrained ``name`` checkpoint at step 0 (``config``: a model config dict, default the tiny one),
    its weights drawn after ``torch.manual_seed(seed)``; -> ``path`` as a string."""
    import torch

    from mart_upstream.checkpoint import save_checkpoint
    from mart_upstream.models import build_model

    torch.manual_seed(seed)
    save_checkpoint(str(path), build_model(name, TINY[name] if config is None else config), name, step=0)
    return str(path)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory):
    """``(name, config=None, seed=0) -> path``: the one source of the tests' untrained checkpoints
    (``write_checkpoint``), each asked-for (name, config, seed) written once per session as ``<name>.ckpt``."""
    import json

    made = {}

    def make(name, config=None, seed=0):
        key = json.dumps([name, config, seed], sort_keys=True)
        if key not in made:
            made[key] = write_checkpoint(tmp_path_factory.mktemp("ckpt") / f"{name}.ckpt", name, config, seed)
        return made[key]

    return make


@pytest.fixture
def tiny():
    return {k: dict(v) for k, v in TINY.items()}


def tiny_overrides(name):
    """TINY[name] as ``model.key=value`` CLI overrides."""
    out = []
    for k, v in TINY[name].items():
        if isinstance(v, dict):
            out += [f"model.{k}.{kk}={vv}" for kk, vv in v.items()]
        else:
            out.append(f"model.{k}={v}")
    return out


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: end-to-end runs of the real harnesses and tools (heareval, s3prl, mart-bench, torchrun); "
        "`-m 'not slow'` leaves them out for a quick edit-test loop",
    )
