"""The child process of an isolated measurement: ``python -m <package>.child {length,training} JSON``
runs one probe and prints its result as one JSON line after ``isolate.MARKER`` (see ``isolate.py``)."""
from __future__ import annotations

import json
import sys

from .isolate import MARKER
from .lengths import probe_length
from .training import probe_training

PROBES = {"length": probe_length, "training": probe_training}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in PROBES:
        print(f"usage: python -m {__spec__.name if __spec__ else 'child'} {{{','.join(PROBES)}}} JSON", file=sys.stderr)
        return 2
    result = PROBES[argv[0]](json.loads(argv[1]))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
