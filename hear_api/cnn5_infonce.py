"""HEAR 2021 API for the strategies paper's Siamese InfoNCE model on CNN-5 (self-augmented, adjacent or
random-segment positives, whichever it was trained with).

* timestamps: the 128-d segment embedding y = f(x) per CNN-5 frame (2.56 s grid, upsampled to the
  HEAR grid);
* scenes: y of every 3 s window, summarised as mean ‖ std (strategies §4): 256-d.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load

LAYERS = (-1,)


def load_model(model_file_path: str = "") -> HearModel:
    """A checkpoint from ``mart-pretrain --model cnn5_infonce``; "" reads the packaged one (none is packaged yet:
    pass a checkpoint)."""
    return _load("cnn5_infonce", model_file_path, LAYERS)
