"""HEAR 2021 API for the SimCLR / CLMR baseline on FCN-4.

* timestamps: the last FCN-4 block's frame map, 512-d, on its native 32 ms grid (STFT hop 128 x
  time pooling 4), the layer the NT-Xent loss trains (through the pooling);
* scenes: the max-pooled FCN-4 output averaged over 3.7 s windows (the pretraining crop): 512-d.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load

LAYERS = (-1,)  # frame_features: the 4 FCN-4 blocks


def load_model(model_file_path: str = "") -> HearModel:
    """A checkpoint from ``mart-pretrain --model simclr``; "" reads the packaged one."""
    return _load("simclr", model_file_path, LAYERS)
