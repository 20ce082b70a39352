"""Run one measurement in a fresh Python process, so its peak memory is its own and a crash (or an
out-of-memory kill) costs only that measurement.

The child is ``python -m benchmarks.speed.isolate KIND JSON``; it prints its result as one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "@@speed-result@@ "


def _probe(kind: str) -> Callable[[dict], dict]:
    if kind == "length":
        from .lengths import probe_length

        return probe_length
    from .training import probe_training

    return probe_training


def run_isolated(kind: str, spec: dict, timeout: Optional[float] = None) -> dict:
    """``spec`` measured by probe ``kind`` in a child process -> its result, or {"error": ...}."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, "-m", __name__ if __name__ != "__main__" else __spec__.name, kind, json.dumps(spec)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    if r.returncode < 0:
        why = f"killed by signal {-r.returncode}" + (" (out of memory?)" if r.returncode == -9 else "")
    else:
        tail = [x for x in r.stderr.strip().splitlines() if x.strip()]
        why = f"exit {r.returncode}: {tail[-1] if tail else 'no output'}"
    return {"error": why}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("length", "training"):
        print("usage: python -m benchmarks.speed.isolate {length,training} JSON", file=sys.stderr)
        return 2
    result = _probe(argv[0])(json.loads(argv[1]))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
