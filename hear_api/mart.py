"""HEAR 2021 API for MART (part-whole hierarchies).

* timestamps: the FCN-7 frame map (local, 125 ms frames) next to the last part-whole transformer
  layer's finest-level part output ŝᴺ⁻¹ (1 s parts in their 8 s context): 2 x 512 = 1024-d,
  interpolated from the 125 ms frame grid onto a 25 ms grid;
* scenes: ŝ⁰, the whole-clip part-whole output, averaged over 8 s windows: 512-d.
"""
from hear_api import _common

LAYERS = (0, -1)  # frame_features: [FCN-7 frame map, s̃ᴺ⁻¹, ŝᴺ⁻¹ after each part-whole layer]

load_model, get_timestamp_embeddings, get_scene_embeddings = _common.module_functions("mart", LAYERS)
