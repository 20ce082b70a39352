"""HEAR 2021 module: 40 MFCCs, the strategies paper's MFCC baseline (see references)."""
from .references import ReferenceModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401  (the HEAR API)


def load_model(model_file_path: str = "") -> ReferenceModel:
    """No weights: the path is ignored."""
    return ReferenceModel("mfcc40").eval()
