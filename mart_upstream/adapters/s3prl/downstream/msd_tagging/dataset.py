"""MSD top-50 tagging on the published split, read by ``mart_upstream.tasks.msd``: the split files of
``MSD_split/`` (``filtered_list_{train,test}.cP``, ``MSD_id_to_7D_id.pkl``, ``msd_id_to_tag_vector.cP``,
``50tagList.txt``) and the 7digital clips ``D/E/<7digital ID>.clip.mp3``; 201,680 train / 11,774 dev /
28,435 test tracks (strategies paper §4.1)."""
from __future__ import annotations

from typing import Optional

from mart_upstream.adapters.s3prl.downstream.common import TaggedClips, check_root, check_split
from mart_upstream.tasks import msd

TASK = "msd_tagging"


def MsdDataset(split: str, root: str, audio_dir: Optional[str] = None, valid_from: int = msd.TRAIN_SIZE,
               sample_rate: Optional[int] = None, skip_unreadable: bool = False, **unused) -> TaggedClips:
    """The tracks of ``split`` (train, dev, test) with a clip; mp3s at any rate by default (resampled)."""
    found = msd.msd_tagging(check_root(TASK, root, "MSD with MSD_split/ and the 7digital clips D/E/*.clip.mp3"),
                            audio_dir, int(valid_from))
    chosen = found.split(check_split(split))
    return TaggedClips(TASK, found.tags, [t.path for t in chosen], [t.name for t in chosen],
                       [t.vector for t in chosen], sample_rate, skip_unreadable)
