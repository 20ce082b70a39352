"""The tests' fixtures; the constants and helpers they build on are in kit.py."""
import pytest

from kit import TINY, write_checkpoint


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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: end-to-end runs of the real harnesses and tools (heareval, s3prl, mart-bench, torchrun); "
        "`-m 'not slow'` leaves them out for a quick edit-test loop",
    )
