"""How the benchmarks run the package in a child process: one environment (this checkout importable), and
a failure that shows the end of the child's log instead of only naming it."""
from __future__ import annotations

import os
import subprocess
from typing import Dict, List, Type

# the checkout this benchmark runs from: its children import the same package (``python -m`` from a
# source tree, as the device kit runs them, or an editable install)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAIL_CHARS = 2000  # how much of a failed child's log its error shows


def child_env(**extra: str) -> Dict[str, str]:
    """The environment of a benchmark's child process: this one's, with this checkout first on
    ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def log_tail(path: str, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log ("" when it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


def run_logged(cmd: List[str], log_path: str, what: str, error: Type[Exception] = RuntimeError,
               **env: str) -> None:
    """Run ``cmd`` with its output appended to ``log_path`` (after a ``$ cmd`` line), in ``child_env(**env)``;
    a non-zero exit raises ``error`` naming ``what``, the exit status, the log and its last lines."""
    with open(log_path, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(**env))
    if r.returncode != 0:
        raise error(f"{what} failed (exit {r.returncode}); log {log_path}:\n{log_tail(log_path)}")
