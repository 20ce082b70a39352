"""The errors a user can cause, one type per layer, and the wrapper that reports them.

Every console script's ``main`` goes through :func:`command`: a :class:`MartError` is printed as one line
``prog: error: message`` and exits with status 2; any other exception is a bug and keeps its traceback.

* :class:`UsageError` - command-line arguments and settings (the CLI layer);
* :class:`ConfigError` - a model or training config (values, types, files), a kind of usage error;
* :class:`AudioError` - audio files and the folders and lists that hold them (the data layer);
* :class:`CheckpointError` - a checkpoint file (the checkpoint layer);
* :class:`TaskError` - a downstream task's data: manifests, splits, labels, task folders (the task layer);
* :class:`DiskFullError` - no space left for a file being written; nothing partial is left behind.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, List, Optional


class MartError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class UsageError(MartError, ValueError):
    """Bad command-line arguments or settings."""


class ConfigError(UsageError):
    """A bad config value, type or file."""


class AudioError(MartError, ValueError):
    """An audio file, folder or file list that cannot be used."""


class CheckpointError(MartError, ValueError):
    """A checkpoint file that is missing, damaged or of the wrong kind."""


class TaskError(MartError, ValueError):
    """A downstream task's data (manifest, split file, labels, task folder) that cannot be used."""


class DiskFullError(MartError, OSError):
    """No space (or quota) left for a file being written; nothing partial is left behind."""


Main = Callable[[Optional[List[str]]], int]


def command(prog: str) -> Callable[[Main], Main]:
    """Decorate a console script's ``main(argv) -> int``: MartError -> ``prog: error: ...``, exit 2."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Optional[List[str]] = None) -> int:
            try:
                return int(main(argv) or 0)
            except MartError as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return 2

        return run

    return wrap
