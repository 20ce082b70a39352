"""HEAR 2021 module: CHROMA statistics, a reference of the offline benchmark (see references)."""
from .references import module_functions

load_model, get_timestamp_embeddings, get_scene_embeddings = module_functions("chroma")
