"""HEAR 2021 module: 40 MFCCs, the strategies paper's MFCC baseline (``mart_upstream.adapters.hear.references``)."""
from mart_upstream.adapters.hear.references import (  # noqa: F401  (the HEAR API)
    ReferenceModel, get_scene_embeddings, get_timestamp_embeddings)


def load_model(model_file_path: str = "") -> ReferenceModel:
    """No weights: the path is ignored."""
    return ReferenceModel("mfcc40").eval()
