"""``python -m mart_upstream.train ...`` (and under ``torchrun -m``): the same as ``mart-pretrain ...``."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
