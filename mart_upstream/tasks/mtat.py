"""MagnaTagATune (MTAT) as distributed: ``annotations_final.csv`` and mp3 clips in folders ``0/`` ... ``f/``.

``annotations_final.csv`` is tab separated (fields in double quotes): ``clip_id``, the 188 tags (0/1),
``mp3_path`` (e.g. ``f/artist-album-01-title-30-59.mp3``). The split is the one CLMR and MARBLE use,
by the first hex digit of the clip's folder: ``0``-``b`` train, ``c`` dev (valid), ``d``-``f`` test
(``SPLIT_FOLDERS``, ``split_of``). The vocabulary is the ``top_k`` (50) most frequent tags over the
whole file (ties: file order) (``read_annotations``).
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import pandas as pd

from mart_upstream.errors import TaskError

ANNOTATIONS = "annotations_final.csv"
SAMPLE_RATE = 16000
SPLIT_FOLDERS = {"train": set("0123456789ab"), "dev": {"c"}, "test": set("def")}


def split_of(mp3_path: str) -> Optional[str]:
    """The split of a clip by the first hex digit of its folder; None outside ``0/`` ... ``f/``."""
    first = mp3_path[:1].lower()
    return next((s for s, folders in SPLIT_FOLDERS.items() if first in folders), None)


def read_annotations(root: str, top_k: int = 50) -> Tuple[pd.DataFrame, List[str]]:
    """-> (DataFrame with clip_id, mp3_path and the top-k tag columns, the top-k tag names)."""
    path = os.path.join(root, ANNOTATIONS)
    if not os.path.isfile(path):
        raise TaskError(f"MTAT: {ANNOTATIONS} not found in {root} (expected MagnaTagATune's "
                        f"{ANNOTATIONS} next to the mp3 folders 0/ ... f/)")
    try:
        df = pd.read_csv(path, sep="\t", dtype={"clip_id": str, "mp3_path": str})
    except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors, as is a decoding error
        raise TaskError(f"MTAT: cannot read {path}: {e}") from None
    cols = list(df.columns)
    if len(cols) < 3 or cols[0] != "clip_id" or cols[-1] != "mp3_path":
        raise TaskError(f"MTAT: {path} is not MTAT's annotation file: expected tab-separated columns "
                        f"clip_id, <tags>, mp3_path; got {cols[:2]} ... {cols[-1:]}")
    tags = cols[1:-1]
    if top_k > len(tags):
        raise TaskError(f"MTAT: top_k={top_k} but {path} has only {len(tags)} tags")
    try:
        counts = df[tags].astype(int).sum(axis=0).to_numpy()
    except ValueError as e:
        raise TaskError(f"MTAT: tag columns of {path} must hold 0/1: {e}") from None
    top = [tags[i] for i in sorted(range(len(tags)), key=lambda i: (-counts[i], i))[:top_k]]
    df = df[["clip_id", "mp3_path"] + top].copy()
    df["mp3_path"] = df["mp3_path"].fillna("").astype(str).str.strip()
    return df, top
