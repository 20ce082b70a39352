"""The former name of :mod:`mart_upstream.embed` (``mart-embed``), kept as an alias: ``python -m
mart_upstream.catalogue`` and ``mart_upstream.catalogue.read_catalogue`` go on working and are the same
objects as in ``mart_upstream.embed``. New code imports ``mart_upstream.embed``."""
import sys

from . import embed as _embed

if __name__ == "__main__":
    raise SystemExit(_embed.main())
sys.modules[__name__] = _embed
