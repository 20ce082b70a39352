"""HEAR 2021 API for MusiCNN (Pons and Serra, 2019), a reference with published weights (mart_upstream.models.musicnn).

* timestamps: the 753-d dense mid-end per 16 ms frame (timbral ‖ temporal ‖ cnn1 ‖ cnn2 ‖ cnn3: the vector
  musicnn's back-end pools), each 3 s patch computed on its own as musicnn does;
* scenes: the 200-d ``penultimate`` layer of every 3 s patch (non-overlapping, as musicnn's extractor),
  averaged over the patches.

The weights are read from the installed musicnn package at first use (``pip install --no-deps
musicnn==0.1.0``) and cached in this project's checkpoint format; nothing is downloaded.
"""
from mart_upstream.adapters.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401
from mart_upstream.adapters.hear import load_model as _load
from mart_upstream.models.musicnn import FRAME_LAYERS, VARIANTS, Musicnn

LAYERS = tuple(range(len(FRAME_LAYERS)))  # summed: each fills its own slot of the dense mid-end vector


def load_model(model_file_path: str = "") -> HearModel:
    """"" or "MTT_musicnn": the MagnaTagATune model; "MSD_musicnn": the Million Song Dataset model; any
    other value: a converted checkpoint file (``python -m mart_upstream.musicnn_weights`` writes one)."""
    if model_file_path in VARIANTS:
        model_file_path = Musicnn.published_checkpoint(model_file_path)
    return _load("musicnn", model_file_path, LAYERS, combine="sum")
