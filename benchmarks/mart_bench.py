"""``mart-bench``: the offline real-music benchmark.

    mart-bench data   build the rendered style / cover / pretraining sets (benchmarks.musicset.build)
    mart-bench run    pretrain mart, pemr, simclr and evaluate them with the references (benchmarks.offline.run)
    mart-bench speed  embedding and pretraining throughput, FLOPs, time and memory vs length (benchmarks.speed)
    mart-bench device-pack    the pretraining audio and wheels for a GPU machine (benchmarks.device.pack)
    mart-bench device-unpack  a GPU run's returned parts back into a run folder (benchmarks.device.unpack)

Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
from typing import List, Optional

from mart_upstream.quiet import silence_known_noise

SUBCOMMANDS = {
    "data": ("benchmarks.musicset.build", "build the rendered music sets"),
    "run": ("benchmarks.offline.run", "pretrain and evaluate all models on the rendered sets"),
    "speed": ("benchmarks.speed", "throughput, FLOPs, time and memory of the encoders"),
    "device-pack": ("benchmarks.device.pack", "pack the pretraining audio and wheels for a GPU machine"),
    "device-unpack": ("benchmarks.device.unpack", "join and extract the parts a GPU run sent back"),
}


def main(argv: Optional[List[str]] = None) -> int:
    silence_known_noise()
    parser = argparse.ArgumentParser(prog="mart-bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module, help_) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        try:
            modules[name] = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            continue  # subcommand not available in this version
        modules[name].add_arguments(sp)
    args = parser.parse_args(argv)
    if args.command not in modules:
        parser.error(f"'{args.command}' is not available")
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
