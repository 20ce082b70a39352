"""FMA-small genre classification as distributed (Defferrard et al., ISMIR 2017; strategies paper §4.2):

    ROOT/fma_metadata/tracks.csv     the metadata of all 106,574 tracks: a 3-row header (column group,
                                     column name, then the index name ``track_id``), one track per row
    ROOT/fma_small/NNN/NNNNNN.mp3    8,000 30 s clips; NNNNNN the 6-digit track id, NNN its first 3 digits

A track is in FMA-small when its ``(set, subset)`` is ``small``; its label is ``(track, genre_top)``
(``GENRES``: 8 balanced genres) and its split is FMA's official one, ``(set, split)``: ``training`` /
``validation`` / ``test`` (6,400 / 800 / 800, artists not shared across splits; strategies §4.2: "We use
the provided official splits"). Tracks listed without an audio file are counted and left out
(``FmaSet.missing``); a file that is there but unreadable is the harness's to skip. A malformed
``tracks.csv`` is a :class:`mart_upstream.errors.TaskError` naming the file.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import List

import pandas as pd

from mart_upstream.errors import TaskError

log = logging.getLogger(__name__)
GENRES = ("Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International", "Pop", "Rock")
FMA_SPLITS = {"training": "train", "validation": "dev", "test": "test"}  # FMA's names -> ``tasks.SPLITS``
SAMPLE_RATE = 44100  # most fma_small mp3s; they are decoded and resampled by the harnesses
SECONDS = 30.0


@dataclass
class FmaTrack:
    track_id: int
    path: str
    genre: str
    split: str  # train | dev | test

    @property
    def name(self) -> str:
        return f"{self.track_id:06d}"


@dataclass
class FmaSet:
    tracks: List[FmaTrack]
    missing: List[int] = field(default_factory=list)  # listed in fma_small, no audio file

    def split(self, split: str) -> List[FmaTrack]:
        return [t for t in self.tracks if t.split == split]


def audio_path(audio_dir: str, track_id: int) -> str:
    """``fma_small/NNN/NNNNNN.mp3`` (as FMA's ``utils.get_audio_path``)."""
    tid = f"{int(track_id):06d}"
    return os.path.join(audio_dir, tid[:3], tid + ".mp3")


def read_tracks(path: str) -> pd.DataFrame:
    """tracks.csv -> a DataFrame indexed by track_id with 2-level columns (FMA's ``utils.load``)."""
    if not os.path.isfile(path):
        raise TaskError(f"FMA: {path} not found (expected fma_metadata/tracks.csv from fma_metadata.zip)")
    try:
        df = pd.read_csv(path, index_col=0, header=[0, 1], low_memory=False)
    except (OSError, ValueError, IndexError) as e:
        raise TaskError(f"FMA: cannot read {path}: {e}") from None
    needed = [("set", "subset"), ("set", "split"), ("track", "genre_top")]
    absent = [c for c in needed if c not in df.columns]
    if absent or df.index.name != "track_id":
        raise TaskError(f"FMA: {path} is not FMA's tracks.csv: it needs the 3-row header (column group, "
                        f"column, track_id) and the columns {', '.join('.'.join(c) for c in needed)}; "
                        f"missing {', '.join('.'.join(c) for c in absent) or 'the track_id index'}")
    return df


def fma_small(root: str) -> FmaSet:
    """The FMA-small tracks of ``root`` (holding ``fma_metadata/`` and ``fma_small/``) with audio."""
    df = read_tracks(os.path.join(root, "fma_metadata", "tracks.csv"))
    audio_dir = os.path.join(root, "fma_small")
    if not os.path.isdir(audio_dir):
        raise TaskError(f"FMA: {audio_dir} not found (expected fma_small/NNN/NNNNNN.mp3 from fma_small.zip)")
    small = df[df[("set", "subset")].astype(str) == "small"]
    if small.empty:
        raise TaskError(f"FMA: no track of {root}/fma_metadata/tracks.csv is in the small subset")
    out = FmaSet([])
    for tid, row in small.iterrows():
        genre, split = str(row[("track", "genre_top")]), str(row[("set", "split")])
        if genre not in GENRES or split not in FMA_SPLITS:
            raise TaskError(f"FMA: track {tid} of the small subset has genre_top {genre!r} and split {split!r}; "
                            f"expected one of {', '.join(GENRES)} and one of {', '.join(FMA_SPLITS)}")
        path = audio_path(audio_dir, int(tid))
        if os.path.isfile(path):
            out.tracks.append(FmaTrack(int(tid), path, genre, FMA_SPLITS[split]))
        else:
            out.missing.append(int(tid))
    if out.missing:
        log.warning("FMA: %d of the %d fma_small tracks have no audio file in %s (first: %s)", len(out.missing),
                    len(small), audio_dir, audio_path(audio_dir, out.missing[0]))
    if not out.tracks:
        raise TaskError(f"FMA: none of the {len(small)} fma_small tracks has its audio in {audio_dir}")
    log.info("FMA-small: %d tracks (%s), %d without audio", len(out.tracks),
             ", ".join(f"{s} {len(out.split(s))}" for s in FMA_SPLITS.values()), len(out.missing))
    return out
