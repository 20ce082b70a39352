"""Known, harmless noise of third-party packages, silenced in this package's command-line entry points.

Each filter names one message; nothing is silenced wholesale.
"""
from __future__ import annotations

import logging
import os
import warnings

# (category, message regex, why it is harmless)
KNOWN_WARNINGS = [
    (UserWarning, r"pkg_resources is deprecated as an API",
     "librosa 0.9 imports pkg_resources; setuptools < 81 is pinned, so it is still there"),
    (FutureWarning, r".*torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
     "s3prl's runner enters torch.cuda.amp.autocast(enabled=False) on every step, also on a CPU"),
]
# (logger, message start, why)
KNOWN_LOG_LINES = [
    ("s3prl.upstream.espnet_hubert.expert", "ESPnet is not installed",
     "s3prl imports every upstream at start; this package does not use espnet_hubert"),
]


class _DropMessages(logging.Filter):
    def __init__(self, starts):
        super().__init__()
        self.starts = tuple(starts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def silence_known_noise() -> None:
    """Install the filters above (idempotent); TensorFlow's C++ start-up lines too, unless the user set a level."""
    for category, message, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, start, _ in KNOWN_LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages([start]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # oneDNN / absl notices of TensorFlow (installed for HEAR)


def start_console(fmt: str = "%(levelname)s %(message)s") -> None:
    """What a console script does first: known third-party noise silenced, our INFO lines on stderr."""
    silence_known_noise()
    logging.basicConfig(level=logging.INFO, format=fmt)
