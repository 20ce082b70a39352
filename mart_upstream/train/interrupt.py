"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal asks the loop to stop after the step in progress: the loop saves a checkpoint (once,
atomically) and exits, and ``--resume`` continues from it. A second Ctrl-C quits at once, without saving.
Data-loading workers ignore SIGINT and SIGTERM (a terminal or a job scheduler signals the whole process
group): the training process decides, and the workers end with it (they watch their parent).
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

INTERRUPTED_EXIT = 130  # the shell's code for a run stopped by SIGINT


class StopRequest:
    """Context manager: ``requested`` turns true at the first SIGINT/SIGTERM while it is active."""

    def __init__(self, announce: bool = True):
        self.requested: Optional[str] = None
        self.announce = announce
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: quit now
        self.requested = name
        if self.announce:
            print(f"\nmart-pretrain: {name}: stopping after this step and saving a checkpoint "
                  "(Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals() -> None:
    """For data-loading worker processes: leave Ctrl-C and SIGTERM to the training process."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
