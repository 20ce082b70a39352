"""Million Song Dataset (MSD) top-50 last.fm tagging on the split the tagging literature shares (strategies
paper §4.1, after Choi et al. 2016 and Lee et al. 2017; also Won et al. 2020): 201,680 train / 11,774 valid /
28,435 test tracks. The split files are published in ``MSD_split/`` of jongpillee/music_dataset_split and
``split/msd/`` of minzwon/sota-music-tagging-models; the audio is 7digital's 30 s previews, which are not
distributed with them:

    SPLIT/filtered_list_train.cP    213,454 MSD track IDs: the first 201,680 train, the other 11,774 valid
    SPLIT/filtered_list_test.cP     28,435 MSD track IDs
    SPLIT/MSD_id_to_7D_id.pkl       {MSD track ID: 7digital ID}
    SPLIT/msd_id_to_tag_vector.cP   {MSD track ID: the 50 tags as 0/1, in 50tagList.txt's order}
    SPLIT/50tagList.txt             the 50 tags, one a line
    AUDIO/D/E/DE....clip.mp3        the previews; D and E the 7digital ID's first two digits

``SPLIT`` is ``ROOT/MSD_split`` when there is one, else ROOT; ``AUDIO`` is ROOT unless given. The pickles
are Python 2 cPickle files: the ID lists are lists of ``str``, the maps dicts, the tag vectors numpy arrays
(of shape (50, 1) in the published file; any 50 values are accepted). They are read by
:func:`load_split_pickle`, which builds only lists, dicts, strings, numbers and numpy arrays.

A listed track whose clip is not in AUDIO is counted (``MsdSet.missing``) and left out; a file that is there
but unreadable is the harness's to skip. Tracks with none of the 50 tags stay (they are in the published
split). Split files that are missing or malformed are a :class:`mart_upstream.errors.TaskError` naming the
file and, where one is at fault, the track.
"""
from __future__ import annotations

import codecs
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mart_upstream.errors import TaskError

try:  # numpy >= 2 keeps ndarray's pickle helpers in numpy._core, numpy 1.x in numpy.core
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray as _np_multiarray

log = logging.getLogger(__name__)
SPLIT_DIR = "MSD_split"
TRAIN_LIST, TEST_LIST = "filtered_list_train.cP", "filtered_list_test.cP"
ID_MAP, TAG_VECTORS, TAG_LIST = "MSD_id_to_7D_id.pkl", "msd_id_to_tag_vector.cP", "50tagList.txt"
SPLIT_FILES = (TRAIN_LIST, TEST_LIST, ID_MAP, TAG_VECTORS, TAG_LIST)
TRAIN_SIZE = 201680  # the first TRAIN_SIZE IDs of filtered_list_train.cP are train, the rest valid
SECONDS = 29.1  # the lists keep clips of at least 29.1 s (Lee et al. 2017)
_MSD_ID = re.compile(r"TR[A-Z0-9]{16}")
_7D_ID = re.compile(r"\d{2,}")

# What a split pickle may name. pickle.load runs any callable a file names, so a pickle from elsewhere can
# execute code; these files come from third-party repositories. Only numpy's array and scalar rebuilding is
# resolved (the tag vectors are numpy arrays; _codecs.encode is how Python 3 pickles bytes below protocol
# 3); any other global is refused. The names are the ones pickles of numpy 1.x (numpy.core) and 2.x
# (numpy._core) write.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("_codecs", "encode"): codecs.encode,
}


class _SplitUnpickler(pickle.Unpickler):
    def __init__(self, f, path: str):
        # latin1: Python 2 str -> str, and the raw bytes of Python 2 numpy arrays kept intact (numpy's advice)
        super().__init__(f, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise TaskError(f"MSD: {self.path} names {module}.{name}; a split file holds only lists, dicts, "
                            "strings, numbers and numpy arrays, so it is not loaded")
        return found


def load_split_pickle(path: str, what: str):
    """One split pickle, through the restricted unpickler; ``what`` says what the file should be."""
    if not os.path.isfile(path):
        raise TaskError(f"MSD: {path} not found ({what}; from MSD_split/ of jongpillee/music_dataset_split)")
    try:
        with open(path, "rb") as f:
            return _SplitUnpickler(f, path).load()
    except TaskError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise TaskError(f"MSD: cannot read {path} as a pickle ({what}): {type(e).__name__}: {e}") from None


def _text(value) -> Optional[str]:
    """A pickled string (Python 2 str, Python 3 str or bytes) as str; None for anything else."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return value if isinstance(value, str) else None


def read_id_list(path: str) -> List[str]:
    """filtered_list_{train,test}.cP -> the MSD track IDs in their order."""
    ids = load_split_pickle(path, "a list of MSD track IDs")
    if not isinstance(ids, (list, tuple)):
        raise TaskError(f"MSD: {path} holds a {type(ids).__name__}; expected a list of MSD track IDs")
    out = [_text(i) for i in ids]
    bad = next((k for k, i in enumerate(out) if i is None or not _MSD_ID.fullmatch(i)), None)
    if bad is not None:
        raise TaskError(f"MSD: entry {bad} of {path} is {ids[bad]!r}, not an MSD track ID (TR + 16 letters "
                        "and digits)")
    return out


def read_id_map(path: str) -> Dict[str, str]:
    """MSD_id_to_7D_id.pkl -> {MSD track ID: 7digital ID as a string of digits}."""
    mapping = load_split_pickle(path, "a dict from MSD track ID to 7digital ID")
    if not isinstance(mapping, dict):
        raise TaskError(f"MSD: {path} holds a {type(mapping).__name__}; expected a dict MSD ID -> 7digital ID")
    out = {}
    for key, value in mapping.items():
        id7d = str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value)
        if _text(key) is None or id7d is None or not _7D_ID.fullmatch(id7d):
            raise TaskError(f"MSD: {path} maps {key!r} to {value!r}; expected MSD track ID -> 7digital ID "
                            "(digits)")
        out[_text(key)] = id7d
    return out


def read_tag_list(path: str) -> List[str]:
    """50tagList.txt -> the tags, one a line, in the order of the tag vectors."""
    if not os.path.isfile(path):
        raise TaskError(f"MSD: {path} not found (the 50 tags, one a line; from MSD_split/)")
    with open(path, encoding="utf-8") as f:
        tags = [line.strip() for line in f if line.strip()]
    if not tags or len(set(tags)) != len(tags):
        raise TaskError(f"MSD: {path} must list distinct tags, one a line; it has {len(tags)} lines, "
                        f"{len(set(tags))} distinct")
    return tags


def tag_vector(vectors: dict, msd_id: str, n_tags: int, path: str) -> np.ndarray:
    """The 0/1 vector of one track from msd_id_to_tag_vector.cP, flattened to float32 [n_tags]."""
    value = vectors.get(msd_id, vectors.get(msd_id.encode("latin1")))
    if value is None:
        raise TaskError(f"MSD: {path} has no tag vector for {msd_id}, which the split lists name")
    try:
        vec = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        vec = None
    if vec is None or vec.size != n_tags or not np.isin(vec, (0.0, 1.0)).all():
        shown = " ".join(repr(value).split())[:80]
        raise TaskError(f"MSD: the tag vector of {msd_id} in {path} is {shown}; expected {n_tags} values of 0 or 1 "
                        f"({TAG_LIST} has {n_tags} tags)")
    return vec


def published_split(train_ids: List[str], test_ids: List[str], valid_from: int = TRAIN_SIZE,
                    train_path: str = TRAIN_LIST) -> Dict[str, List[str]]:
    """{train, dev, test: MSD IDs}: the first ``valid_from`` IDs of the training list train, the rest dev."""
    if valid_from < 1:
        raise TaskError(f"MSD: valid_from must be at least 1 (the published split: {TRAIN_SIZE}), got {valid_from}")
    if len(train_ids) <= valid_from:
        raise TaskError(f"MSD: {train_path} has {len(train_ids)} IDs; the split takes the first {valid_from} "
                        "for training and the rest for validation, so it needs more (the published list has "
                        f"{TRAIN_SIZE} + 11774)")
    both = set(train_ids) & set(test_ids)
    if both:
        raise TaskError(f"MSD: {len(both)} IDs are in both {TRAIN_LIST} and {TEST_LIST} (e.g. {min(both)}); "
                        "the lists must not share tracks")
    return {"train": train_ids[:valid_from], "dev": train_ids[valid_from:], "test": list(test_ids)}


@dataclass
class MsdTrack:
    msd_id: str
    id7d: str
    path: str
    vector: np.ndarray  # float32 [n_tags], 0/1 in the order of MsdSet.tags
    split: str  # train | dev | test

    @property
    def name(self) -> str:
        return self.msd_id


@dataclass
class MsdSet:
    tags: List[str]
    tracks: List[MsdTrack]
    missing: List[str] = field(default_factory=list)  # listed MSD IDs whose clip is not in the audio folder

    def split(self, split: str) -> List[MsdTrack]:
        return [t for t in self.tracks if t.split == split]

    def tag_names(self, track: MsdTrack) -> List[str]:
        return [t for t, v in zip(self.tags, track.vector) if v]


def audio_path(audio_dir: str, id7d: str) -> str:
    """``D/E/DE....clip.mp3``: the 7digital ID's first and second digit, then the ID."""
    return os.path.join(audio_dir, id7d[0], id7d[1], f"{id7d}.clip.mp3")


def split_dir(root: str) -> str:
    """``ROOT/MSD_split`` (the published folder) or ROOT itself, whichever holds the training list."""
    for d in (os.path.join(root, SPLIT_DIR), root):
        if os.path.isfile(os.path.join(d, TRAIN_LIST)):
            return d
    raise TaskError(f"MSD: no {TRAIN_LIST} in {root} or {root}/{SPLIT_DIR} (expected the split files "
                    f"{', '.join(SPLIT_FILES)})")


def msd_tagging(root: str, audio_dir: Optional[str] = None, valid_from: int = TRAIN_SIZE) -> MsdSet:
    """The tracks of the published split with a clip in ``audio_dir`` (default ROOT), labelled by their
    tag vectors; ``valid_from`` is where the training list is cut (the published 201,680 by default)."""
    base = split_dir(root)
    audio_dir = root if audio_dir is None else os.path.expanduser(str(audio_dir))
    if not os.path.isdir(audio_dir):
        raise TaskError(f"MSD: audio folder {audio_dir} not found (expected D/E/<7digital ID>.clip.mp3)")
    paths = {name: os.path.join(base, name) for name in SPLIT_FILES}
    splits = published_split(read_id_list(paths[TRAIN_LIST]), read_id_list(paths[TEST_LIST]), valid_from,
                             paths[TRAIN_LIST])
    tags = read_tag_list(paths[TAG_LIST])
    to_7d = read_id_map(paths[ID_MAP])
    vectors = load_split_pickle(paths[TAG_VECTORS], "a dict from MSD track ID to its tag vector")
    if not isinstance(vectors, dict):
        raise TaskError(f"MSD: {paths[TAG_VECTORS]} holds a {type(vectors).__name__}; expected a dict "
                        "MSD ID -> tag vector")
    out = MsdSet(tags, [])
    for split, ids in splits.items():
        for msd_id in ids:
            id7d = to_7d.get(msd_id)
            if id7d is None:
                raise TaskError(f"MSD: {paths[ID_MAP]} has no 7digital ID for {msd_id}, which the split lists name")
            path = audio_path(audio_dir, id7d)
            if not os.path.isfile(path):
                out.missing.append(msd_id)
                continue
            out.tracks.append(MsdTrack(msd_id, id7d, path, tag_vector(vectors, msd_id, len(tags),
                                                                      paths[TAG_VECTORS]), split))
    listed = sum(len(ids) for ids in splits.values())
    if out.missing:
        log.warning("MSD: %d of the %d listed tracks have no clip in %s (first: %s)", len(out.missing), listed,
                    audio_dir, audio_path(audio_dir, to_7d[out.missing[0]]))
    if not out.tracks:
        raise TaskError(f"MSD: none of the {listed} listed tracks has its clip in {audio_dir} "
                        "(expected D/E/<7digital ID>.clip.mp3)")
    log.info("MSD tagging: %d tracks (%s), %d without audio, %d with none of the %d tags", len(out.tracks),
             ", ".join(f"{s} {len(out.split(s))}" for s in splits), len(out.missing),
             sum(1 for t in out.tracks if not t.vector.any()), len(tags))
    return out
