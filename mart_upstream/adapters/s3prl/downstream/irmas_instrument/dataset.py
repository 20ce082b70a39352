"""IRMAS predominant-instrument classification on its training data, read by ``mart_upstream.tasks.irmas``:
``IRMAS-TrainingData/<inst>/*.wav`` (11 instruments, 3 s excerpts, 44.1 kHz), split 80/10/10 by
recording (IRMAS publishes no split of these files; strategies paper §4.3)."""
from __future__ import annotations

from typing import Optional

from mart_upstream.adapters.s3prl.downstream.common import LabelledClips, check_root, check_split
from mart_upstream.tasks import irmas

TASK = "irmas_instrument"


def IrmasDataset(split: str, root: str, sample_rate: Optional[int] = irmas.SAMPLE_RATE, skip_unreadable: bool = False,
                 split_seed: int = 0, **unused) -> LabelledClips:
    """The excerpts of ``split`` (train, dev, test) under the recording split drawn with ``split_seed``."""
    excerpts = irmas.irmas_training(check_root(TASK, root, "IRMAS with IRMAS-TrainingData/<inst>/*.wav"), split_seed)
    chosen = [e for e in excerpts if e.split == check_split(split)]
    return LabelledClips(TASK, [e.path for e in chosen], [e.name for e in chosen],
                         [irmas.INSTRUMENTS.index(e.instrument) for e in chosen], sample_rate, skip_unreadable)
