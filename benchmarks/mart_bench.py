"""``mart-bench``: the offline real-music benchmark.

    mart-bench data   build the rendered style / cover / pretraining sets (.data.build)
    mart-bench run    pretrain mart, pemr, simclr and evaluate them with the references (.run.run)
    mart-bench ablate one model trained with parts of its augmentation chain off, on the recordings (.run.ablate)
    mart-bench speed  embedding and pretraining throughput, FLOPs, time and memory vs length (.speed)
    mart-bench device-pack    the pretraining audio and wheels for a GPU machine (.device.pack)
    mart-bench device-unpack  a GPU run's returned parts back into a run folder (.device.unpack)

Subcommand modules are named relative to this package; each provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
from typing import List, Optional

from mart_upstream.errors import command
from mart_upstream.quiet import silence_known_noise

SUBCOMMANDS = {
    "data": (".data.build", "build the rendered music sets"),
    "run": (".run.run", "pretrain and evaluate all models on the rendered sets"),
    "ablate": (".run.ablate", "augmentation ablations of one model on the recordings tasks"),
    "speed": (".speed", "throughput, FLOPs, time and memory of the encoders"),
    "device-pack": (".device.pack", "pack the pretraining audio and wheels for a GPU machine"),
    "device-unpack": (".device.unpack", "join and extract the parts a GPU run sent back"),
}


def main(argv: Optional[List[str]] = None) -> int:
    silence_known_noise()
    parser = argparse.ArgumentParser(prog="mart-bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module, help_) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        modules[name] = importlib.import_module(module, __package__)
        modules[name].add_arguments(sp)
    args = parser.parse_args(argv)
    # errors are reported under the subcommand's name, e.g. "mart-bench run: error: ..."
    return command(f"mart-bench {args.command}")(lambda _: modules[args.command].run(args))(None)


if __name__ == "__main__":
    raise SystemExit(main())
