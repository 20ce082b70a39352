"""music21 corpus works as note lists (part, onset and duration in beats, MIDI pitch).

A work is one corpus file: the unit of the train/valid/test split and of the no-overlap rule between
the sets. A multi-tune ABC collection file is one work played by one of its tunes (the first usable
one in a seeded order). Note lists are built directly from the parsed score (not through music21's
MIDI export, whose tick values are absurd for some scores), with hard bounds on length and note
duration, and each parse runs under a timeout.
"""
from __future__ import annotations

import os
import random
import re
import signal
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# Style classes: a label -> corpus composers (music21 names) and the file suffixes kept.
STYLE_CORPORA: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "bach_chorale": (("bach",), (".mxl",)),
    "palestrina_mass": (("palestrina",), (".krn",)),
    "monteverdi_madrigal": (("monteverdi",), (".mxl",)),
    "trecento": (("trecento",), (".xml",)),
    "classical_quartet": (("haydn", "mozart", "beethoven"), (".mxl",)),
    "essen_folk": (("essenFolksong",), (".abc",)),
    "oneill_irish": (("oneills1850",), (".abc",)),
    "ryans_mammoth": (("ryansMammoth",), (".abc",)),
}
MAX_BEATS = 2000.0  # notes after this onset are dropped
MAX_NOTE_BEATS = 16.0  # longer notes are cut
TUNES_TRIED = 8  # tunes of a collection file tried before the file is skipped
Note = Tuple[int, float, float, int]  # (part, onset beat, duration beats, MIDI pitch)


@dataclass(frozen=True)
class Work:
    label: str  # the corpus group (style class name)
    path: str  # corpus-relative file: the work's id
    tunes: Tuple[int, ...] = ()  # ABC collection: tune numbers to try, in order

    @property
    def id(self) -> str:
        return self.path


def corpus_root() -> str:
    import music21

    return os.path.join(os.path.dirname(music21.__file__), "corpus")


def _abc_numbers(path: str) -> List[int]:
    with open(path, encoding="latin-1") as f:
        return [int(m.group(1)) for m in re.finditer(r"^X:\s*(\d+)", f.read(), flags=re.M)]


def list_works(label: str, seed: int) -> List[Work]:
    """Every work (corpus file) of a style class, sorted by path; collections get a seeded tune order."""
    from music21 import corpus

    composers, suffixes = STYLE_CORPORA[label]
    root = corpus_root()
    works = []
    for p in sorted({str(x) for c in composers for x in corpus.getComposer(c)}):
        if not p.endswith(suffixes):
            continue
        rel = os.path.relpath(p, root)
        nums = _abc_numbers(p) if p.endswith(".abc") else []
        if len(nums) > 1:
            random.Random(f"{seed}-tune-{rel}").shuffle(nums)
            works.append(Work(label, rel, tuple(nums[:TUNES_TRIED])))
        else:
            works.append(Work(label, rel))
    return works


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hung parse
    raise _Timeout()


def _notes(score) -> List[Note]:
    notes: List[Note] = []
    parts = getattr(score, "parts", None) or [score]
    for i, part in enumerate(parts):
        for n in part.flatten().notes:
            onset = float(n.offset)
            dur = min(float(n.duration.quarterLength), MAX_NOTE_BEATS)
            if onset > MAX_BEATS or dur <= 0:
                continue
            for p in getattr(n, "pitches", ()):
                if 0 <= p.midi < 128:
                    notes.append((min(i, 15), onset, dur, int(p.midi)))
    notes.sort(key=lambda x: (x[1], x[0], x[3], x[2]))
    return notes


def parse_notes(work: Work, min_beats: float, timeout_s: int) -> Tuple[Optional[List[Note]], Optional[int], str]:
    """-> (note list spanning at least ``min_beats``, tune number or None, "") or (None, None, reason)."""
    from music21 import corpus

    path = os.path.join(corpus_root(), work.path)
    reason = "no notes"
    for number in work.tunes or (None,):
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout_s)
        try:
            score = corpus.parse(path, number=number) if number is not None else corpus.parse(path)
            notes = _notes(score)
        except _Timeout:
            return None, None, f"parse took more than {timeout_s} s"
        except Exception as e:  # noqa: BLE001 - a file music21 cannot read is skipped by the caller
            reason = f"music21 cannot parse it ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})"
            continue
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        if notes and span(notes) >= min_beats:
            return notes, number, ""
        reason = f"shorter than {min_beats:g} beats" if notes else "no notes"
    return None, None, reason


def span(notes: List[Note]) -> float:
    return max(o + d for _, o, d, _ in notes)
