"""HEAR 2021 API for PEMR (positive-negative frame masks).

* timestamps: the last FCN-4 block's frame map, 512-d, on its native 32 ms grid (STFT hop 128 x
  time pooling 4), the layer the Barlow-Twins and negative terms train;
* scenes: the max-pooled FCN-4 output averaged over 3.7 s windows (the pretraining crop): 512-d.
"""
from hear_api import _common

LAYERS = (-1,)  # frame_features: the 4 FCN-4 blocks

load_model, get_timestamp_embeddings, get_scene_embeddings = _common.module_functions("pemr", LAYERS)
