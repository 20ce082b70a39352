"""HEAR 2021 API for the strategies paper's multi-level InfoNCE model on CNN-5 (eq. 2).

* timestamps: the five levels' projections per frame, each in its own 128-d slot, summed into one
  640-d vector (the concatenation of the levels);
* scenes: the 640-d level concatenation of every 3 s window, summarised as mean ‖ std: 1280-d.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load

LAYERS = (0, 1, 2, 3, 4)


def load_model(model_file_path: str = "") -> HearModel:
    """A checkpoint from ``mart-pretrain --model cnn5_multilevel``; "" reads the packaged one (none is packaged yet:
    pass a checkpoint)."""
    return _load("cnn5_multilevel", model_file_path, LAYERS, combine="sum")
