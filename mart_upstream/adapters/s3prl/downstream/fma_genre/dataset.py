"""FMA-small genre classification on FMA's official split, read by ``mart_upstream.tasks.fma``:
``fma_metadata/tracks.csv`` + ``fma_small/NNN/NNNNNN.mp3``, 8 genres, 6,400 train / 800 dev (validation) /
800 test tracks (strategies paper §4.2)."""
from __future__ import annotations

from typing import Optional

from mart_upstream.adapters.s3prl.downstream.common import LabelledClips, check_root, check_split
from mart_upstream.tasks import fma

TASK = "fma_genre"


def FmaDataset(split: str, root: str, sample_rate: Optional[int] = None, skip_unreadable: bool = False,
               **unused) -> LabelledClips:
    """The tracks of ``split`` (train, dev, test); mp3s at any rate by default (resampled to 16 kHz)."""
    tracks = fma.fma_small(check_root(TASK, root, "FMA with fma_metadata/tracks.csv and fma_small/NNN/NNNNNN.mp3"))
    chosen = [t for t in tracks.tracks if t.split == check_split(split)]
    return LabelledClips(TASK, [t.path for t in chosen], [t.name for t in chosen],
                         [fma.GENRES.index(t.genre) for t in chosen], sample_rate, skip_unreadable)
