"""argparse types shared by the command-line tools."""
from __future__ import annotations

import argparse
import math


def positive(kind: type):
    """argparse type: a positive, finite ``kind`` (``int`` or ``float``); nan, inf, 0 and text are refused."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive {'integer' if kind is int else 'number'}, "
                                             f"got {text!r}")
        return value

    return parse


def comma_list(text: str, kind: type = str) -> list:
    """``"a, b,,c"`` -> [kind("a"), kind("b"), kind("c")]: the items of a comma-separated list, stripped,
    blank ones left out (the one parser of the tools' comma lists). ``kind``'s ValueError for an item it
    cannot read; each tool words its own error."""
    return [kind(x.strip()) for x in text.split(",") if x.strip()]
