"""Instrument classification from NSynth as distributed (the json/wav archives, v2.2.3):

    ROOT/nsynth-train/examples.json     {"<note_str>": {"note_str": ..., "instrument_str": ...,
    ROOT/nsynth-valid/examples.json                     "instrument_family_str": "guitar", "pitch": ...,
    ROOT/nsynth-test/examples.json                      "velocity": ..., "sample_rate": 16000, ...}, ...}
    ROOT/nsynth-<split>/audio/<note_str>.wav   4 s, 16 kHz mono

The label of a note is its ``instrument_family_str`` (``FAMILIES``: 11 families). The split is NSynth's
own (train / valid (dev) / test; no instrument of the training split is in the other two). NSynth has
about 290,000 training notes: ``per_class`` keeps at most that many notes of each family in each split,
drawn with a seed. Listed notes without an audio file are counted and left out; a malformed
``examples.json`` is a :class:`mart_upstream.errors.TaskError` naming the file (and the line, or the note).
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from mart_upstream.errors import TaskError

from . import SPLITS

log = logging.getLogger(__name__)
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead",
            "vocal")
SPLIT_FOLDERS = {"train": "nsynth-train", "dev": "nsynth-valid", "test": "nsynth-test"}
SAMPLE_RATE = 16000
SECONDS = 4.0


@dataclass
class Note:
    name: str  # note_str: <instrument_str>-<pitch>-<velocity>
    path: str
    family: str  # instrument_family_str: the label
    instrument: str  # instrument_str
    split: str  # train, dev or test


@dataclass
class NSynthSet:
    notes: List[Note]
    missing: List[str] = field(default_factory=list)  # listed notes without an audio file
    listed: Dict[str, int] = field(default_factory=dict)  # split -> notes listed in its examples.json

    def summary(self) -> str:
        counts = {s: sum(n.split == s for n in self.notes) for s in SPLITS}
        return (f"{len(self.notes)} notes of {len({n.family for n in self.notes})} families "
                f"({', '.join(f'{s} {c}' for s, c in counts.items())}; {len(self.missing)} without audio)")


def _examples(path: str) -> Dict[str, dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise TaskError(f"NSynth: {path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"NSynth: cannot read {path} ({e})") from None
    except RecursionError:
        raise TaskError(f"NSynth: {path} is nested too deeply to be NSynth's examples.json") from None
    if not isinstance(data, dict):
        raise TaskError(f"NSynth: {path} must map each note_str to its annotations, got a {type(data).__name__}")
    return data


def read_split(root: str, split: str) -> NSynthSet:
    """One split's notes (those with an audio file), in examples.json order."""
    if split not in SPLITS:
        raise TaskError(f"NSynth: unknown split {split!r}; NSynth has {', '.join(SPLITS)} (valid is dev)")
    folder = os.path.join(root, SPLIT_FOLDERS[split])
    path = os.path.join(folder, "examples.json")
    if not os.path.isfile(path):
        raise TaskError(f"NSynth: {path} not found (expected {SPLIT_FOLDERS[split]}/examples.json and "
                        f"{SPLIT_FOLDERS[split]}/audio/<note_str>.wav under {root})")
    out = NSynthSet([], listed={split: 0})
    for key, meta in _examples(path).items():
        if not isinstance(meta, dict) or not isinstance(meta.get("instrument_family_str"), str):
            raise TaskError(f"NSynth: {path}, note {key!r}: no instrument_family_str")
        family = meta["instrument_family_str"]
        if family not in FAMILIES:
            raise TaskError(f"NSynth: {path}, note {key!r}: instrument family {family!r} is not one of NSynth's "
                            f"{', '.join(FAMILIES)}")
        name = str(meta.get("note_str") or key)
        if name != key or "/" in name or name.startswith("."):
            raise TaskError(f"NSynth: {path}, note {key!r}: note_str {name!r} must equal its key (a file name)")
        out.listed[split] += 1
        wav = os.path.join(folder, "audio", name + ".wav")
        if os.path.isfile(wav):
            out.notes.append(Note(name, wav, family, str(meta.get("instrument_str", "")), split))
        else:
            out.missing.append(wav)
    return out


def nsynth(root: str, per_class: Optional[int] = None, seed: int = 0,
           splits: Sequence[str] = SPLITS) -> NSynthSet:
    """The notes of ``splits``; with ``per_class``, at most that many of each family in each split (a
    seeded draw, kept in examples.json order)."""
    if per_class is not None and per_class < 1:
        raise TaskError(f"NSynth: per_class must be at least 1, got {per_class}")
    out = NSynthSet([])
    for split in splits:
        part = read_split(root, split)
        out.missing += part.missing
        out.listed.update(part.listed)
        if per_class is None:
            out.notes += part.notes
            continue
        for family in FAMILIES:
            idx = [i for i, n in enumerate(part.notes) if n.family == family]
            if len(idx) > per_class:
                idx = sorted(random.Random(f"{seed}-{split}-{family}").sample(idx, per_class))
            out.notes += [part.notes[i] for i in idx]
    names: Dict[str, str] = {}
    for n in out.notes:
        if names.setdefault(n.name, n.split) != n.split:
            raise TaskError(f"NSynth: note {n.name} is listed in both {names[n.name]} and {n.split}")
    if out.missing:
        log.warning("NSynth: %d listed notes have no audio file (first: %s)", len(out.missing), out.missing[0])
    if not out.notes:
        raise TaskError(f"NSynth: no notes with audio under {root} ({len(out.missing)} listed files missing)")
    return out
