"""music21 corpus works as note lists (part, onset and duration in beats, MIDI pitch).

Note lists are built directly from the parsed score (not through music21's MIDI export, whose tick
values are absurd for some scores), with hard bounds on length and note duration. A work is one
corpus file, or one tune of a multi-tune ABC collection (``path#number``).
"""
from __future__ import annotations

import os
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
Note = Tuple[int, float, float, int]  # (part, onset beat, duration beats, MIDI pitch)


@dataclass(frozen=True)
class Work:
    label: str
    path: str  # corpus-relative path
    number: Optional[int] = None  # tune number inside an ABC collection

    @property
    def id(self) -> str:
        return self.path + (f"#{self.number}" if self.number is not None else "")


def corpus_root() -> str:
    import music21

    return os.path.join(os.path.dirname(music21.__file__), "corpus")


def _abc_numbers(path: str) -> List[int]:
    with open(path, encoding="latin-1") as f:
        return [int(m.group(1)) for m in re.finditer(r"^X:\s*(\d+)", f.read(), flags=re.M)]


def list_works(label: str) -> List[Work]:
    """Every work of a style class, in a stable order."""
    from music21 import corpus

    composers, suffixes = STYLE_CORPORA[label]
    root = corpus_root()
    works = []
    for c in composers:
        for p in sorted(str(x) for x in corpus.getComposer(c)):
            if not p.endswith(suffixes):
                continue
            rel = os.path.relpath(p, root)
            if p.endswith(".abc"):
                nums = _abc_numbers(p)
                works += [Work(label, rel, n) for n in nums] if len(nums) > 1 else [Work(label, rel)]
            else:
                works.append(Work(label, rel))
    return works


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hung parse
    raise _Timeout()


def parse_notes(work: Work, timeout_s: int = 60) -> Optional[List[Note]]:
    """-> sorted note list, or None when the score cannot be parsed in ``timeout_s`` or holds no notes."""
    from music21 import corpus

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        path = os.path.join(corpus_root(), work.path)
        score = corpus.parse(path, number=work.number) if work.number is not None else corpus.parse(path)
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
        return notes or None
    except _Timeout:
        return None
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is skipped by the caller
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def span(notes: List[Note]) -> float:
    return max(o + d for _, o, d, _ in notes)
