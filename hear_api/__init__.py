"""HEAR 2021 API modules: one per registered model (``hear_api.mart``, ``hear_api.pemr``, ``hear_api.simclr``,
...), and the references without weights ``hear_api.mfcc``, ``hear_api.mfcc40`` and ``hear_api.chroma``.

Each exposes ``load_model``, ``get_timestamp_embeddings`` and ``get_scene_embeddings``
(https://hearbenchmark.com/hear-api.html), e.g. ``hear-validator hear_api.mart -m mart.ckpt``.
"""
