import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tiny model configs: the real architectures, narrowed and shortened so CPU tests stay fast.
TINY = {
    "mart": {
        "clip_samples": 8000,
        "finest_hop": 50,
        "encoder": {"channels": [8, 8, 8, 8, 8, 8, 16]},
        "pwt_head_dim": 8,
        "proj_hidden": 16,
        "proj_dim": 8,
    },
    "pemr": {
        "clip_samples": 4000,
        "encoder": {"channels": [8, 8, 8, 16]},
        "d_model": 24,
        "head_dim": 8,
        "proj_hidden": 16,
        "proj_dim": 8,
    },
    "simclr": {
        "clip_samples": 4000,
        "encoder": {"channels": [8, 8, 8, 16]},
        "proj_hidden": 16,
        "proj_dim": 8,
    },
}


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
