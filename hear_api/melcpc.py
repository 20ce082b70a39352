"""HEAR 2021 API for MelCPC (strategies §2.2.2): CNN-5 segment encoder and GRU context network.

* timestamps: the last CNN-5 block's frame map;
* scenes: the GRU outputs over the segments of every 12 s window, mean ‖ std (strategies §4), averaged
  over windows.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load

LAYERS = (-1,)


def load_model(model_file_path: str = "") -> HearModel:
    """A checkpoint from ``mart-pretrain --model melcpc``; "" reads the packaged one (none is packaged yet:
    pass a checkpoint)."""
    return _load("melcpc", model_file_path, LAYERS)
