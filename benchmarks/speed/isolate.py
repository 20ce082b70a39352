"""Run one measurement in a fresh Python process, so its peak memory is its own and a crash (or an
out-of-memory kill) costs only that measurement.

The parent calls ``run_isolated(kind, spec)``; the child is ``python -m <this package>.child KIND JSON``
(``child.py``, which imports the probes) and prints its result as one JSON line after ``MARKER``. This
module imports none of the probes' modules, so ``lengths`` and ``training`` can import it without a cycle.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Optional

from ..subprocesses import ROOT, child_env

MARKER = "@@speed-result@@ "
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*: ")  # "ValueError: ...", "torch._dynamo.exc.Unsupported: ..."
CHILD = (__spec__.parent if __spec__ is not None and __spec__.parent else "benchmarks.speed") + ".child"


def run_isolated(kind: str, spec: dict, timeout: Optional[float] = None) -> dict:
    """``spec`` measured by probe ``kind`` in a child process -> its result, or {"error": ...}."""
    cmd = [sys.executable, "-m", CHILD, kind, json.dumps(spec)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    if r.returncode < 0:
        why = f"killed by signal {-r.returncode}" + (" (out of memory?)" if r.returncode == -9 else "")
    else:
        why = f"exit {r.returncode}: {failure_line(r.stderr)}"
    return {"error": why, "log_tail": [x for x in r.stderr.splitlines() if x.strip()][-20:]}


def failure_line(stderr: str) -> str:
    """The line of a child's stderr that says why it failed: the last exception line (``SomeError: ...``),
    not the hints libraries print after it (torch.compile's ``Set TORCHDYNAMO_VERBOSE=1 ...``)."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else "no output"
