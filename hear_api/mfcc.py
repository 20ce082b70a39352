"""HEAR 2021 module: MFCC statistics, a reference without weights (``mart_upstream.adapters.hear.references``)."""
from mart_upstream.adapters.hear.references import (  # noqa: F401  (the HEAR API)
    ReferenceModel, get_scene_embeddings, get_timestamp_embeddings)


def load_model(model_file_path: str = "") -> ReferenceModel:
    """No weights: the path is ignored."""
    return ReferenceModel("mfcc").eval()
