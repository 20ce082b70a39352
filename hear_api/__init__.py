"""HEAR 2021 API modules: ``hear_api.mart``, ``hear_api.pemr``, ``hear_api.simclr``.

Each exposes ``load_model``, ``get_timestamp_embeddings`` and ``get_scene_embeddings``
(https://hearbenchmark.com/hear-api.html), e.g. ``hear-validator hear_api.mart -m mart.ckpt``.
"""
