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
