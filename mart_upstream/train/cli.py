"""Pretraining entry point: ``mart-pretrain --model NAME --data DIR --out DIR`` (NAME: any registered model).

The command line is turned into a job (what to train, where) and settings (``settings.py``: defaults <
config file < command line < a resumed run's own settings), then ``loop.train`` runs it, on CPU, one
GPU, or several GPUs / nodes under ``torchrun -m mart_upstream.train``. Ctrl-C or SIGTERM stops after
the step in progress and saves a checkpoint (exit status 130).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ..argtypes import comma_list
from ..errors import UsageError, command
from ..models import all_names, get_entry, model_names
from ..quiet import silence_known_noise
from .interrupt import INTERRUPTED_EXIT
from .loop import Interrupted, train
from .settings import Job, build_settings, resumable_run

PROG = "mart-pretrain"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Self-supervised pretraining of MART, PEMR or the SimCLR baseline on a folder of audio. "
        "Run under torchrun for several GPUs. Extra key=value arguments override the config "
        "(e.g. model.levels=3 optim.lr=1e-3 augment.p_pitch=0).",
        epilog=augment_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, choices=all_names(), metavar="{" + ",".join(model_names()) + "}")
    p.add_argument("--data", help="folder tree of audio files (wav/flac/ogg/mp3)")
    p.add_argument("--out", required=True, help="run folder; the final checkpoint is OUT/last.ckpt")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="time budget: stop after this many minutes of training, or at --steps if sooner")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--config", help="YAML/JSON file with sections model, optim, data, run, augment; 'cpu': the "
                                    "packaged CPU-sized settings of --model (mart_upstream/configs/<model>_cpu.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt if it exists")
    p.add_argument("--file-list", dest="file_list", help="text file of audio paths (relative to --data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", help="where a model's positive views come from (models with a 'strategy' "
                   "setting: self_aug, adjacent, random)")
    p.add_argument("--num-workers", type=int, dest="num_workers")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every")
    p.add_argument("--log-every", type=int, dest="log_every")
    p.add_argument("--keep-steps", dest="keep_steps", type=lambda t: tuple(comma_list(t, int)),
                   help="comma-separated steps whose weights are kept as OUT/step_<N>.ckpt (for learning curves)")
    p.add_argument("--tensorboard", action="store_true", default=None)  # None: as the config says
    p.add_argument("--demo", type=int, metavar="N", default=0,
                   help="without --data: generate N synthetic music tracks into OUT/demo_audio and train on them")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def augment_epilog() -> str:
    """What --help says about the augmentations: each model's changes to the CLMR chain's defaults, and
    where a run's effective settings are written."""
    from ..augment import AugmentConfig

    base = AugmentConfig()
    lines = ["augmentations (augment.*): the CLMR chain's defaults "
             f"(p_polarity={base.p_polarity}, p_noise={base.p_noise}, p_gain={base.p_gain}, p_filter={base.p_filter}, "
             f"p_delay={base.p_delay}, p_pitch={base.p_pitch} over {base.pitch_semitones} semitones, "
             f"p_reverb={base.p_reverb}, p_stretch={base.p_stretch}), changed per model as its paper says:"]
    for name in model_names():
        entry = get_entry(name)
        aug = (entry.model_cls.pretrain_defaults or {}).get("augment")
        if entry.trainable:
            lines.append(f"  {name}: " + (", ".join(f"{k}={v}" for k, v in aug.items()) if aug else "the chain's defaults"))
    lines.append("every run writes the settings it trains with, augmentations included, to OUT/settings.json")
    return "\n".join(lines)


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    silence_known_noise()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if not get_entry(args.model).trainable:
        raise UsageError(f"--model {args.model}: a published reference model with fixed weights, not trained here; "
                         f"embed with it instead (mart-embed --model {args.model}, hear_api.{args.model}, "
                         f"s3prl -u {args.model}); pretraining models: {', '.join(model_names())}")
    job = Job(model=args.model, out=args.out, data=args.data, demo=args.demo)
    resumed = resumable_run(job) if args.resume else None
    settings = build_settings(args, resumed)
    try:
        train(job, settings, resumed)
    except Interrupted:
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
