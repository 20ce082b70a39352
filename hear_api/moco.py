"""HEAR 2021 API for the MoCo v2 baseline on FCN-4 (query encoder).

* timestamps: the last FCN-4 block's frame map, 512-d, on its 32 ms grid;
* scenes: the max-pooled FCN-4 output averaged over windows of the pretraining crop: 512-d.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load

LAYERS = (-1,)


def load_model(model_file_path: str = "") -> HearModel:
    """A checkpoint from ``mart-pretrain --model moco``; "" reads the packaged one (none is packaged yet:
    pass a checkpoint)."""
    return _load("moco", model_file_path, LAYERS)
