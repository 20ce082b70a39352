"""``python -m benchmarks.speed ...``: the same as ``mart-bench speed ...``."""
import argparse

from . import PROG, add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    add_arguments(parser)
    return int(run(parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
