"""``mart-hear-task``: build HEAR 2021 task folders that heareval runs on.

    mart-hear-task gtzan  GTZAN_ROOT --out tasks [--sample-rates 16000,48000]
    mart-hear-task mtat   MTAT_ROOT  --out tasks [--top-k 50]
    mart-hear-task nsynth NSYNTH_ROOT --out tasks [--per-class 500] [--seed 0]
    mart-hear-task fma    FMA_ROOT    --out tasks
    mart-hear-task irmas  IRMAS_ROOT  --out tasks [--seed 0]
    mart-hear-task msd    MSD_ROOT    --out tasks [--audio-dir DIR]
    mart-hear-task folder ROOT       --out tasks [--name NAME] [--nfolds 5]

then ``python -m heareval.embeddings.runner hear_api.mart --model mart.ckpt --tasks-dir tasks`` and
``python -m heareval.predictions.runner embeddings/hear_api.mart/*`` (see docs/hear.md).
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from mart_upstream.argtypes import comma_list
from mart_upstream.errors import UsageError, command
from mart_upstream.quiet import start_console
from mart_upstream.tasks import msd

from . import sources
from .taskfolder import HEAR_SAMPLE_RATES, Item, TaskSpec, assign_kfolds, build_task

__all__ = ["main", "build_task", "assign_kfolds", "Item", "TaskSpec", "sources"]


def _rates(text: str) -> List[int]:
    try:
        rates = comma_list(text, int)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sample rates must be integers separated by commas, got {text!r}")
    bad = [r for r in rates if r not in HEAR_SAMPLE_RATES]
    if not rates or bad:
        raise argparse.ArgumentTypeError(f"sample rates must be among {HEAR_SAMPLE_RATES}, got {text!r}")
    return rates


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mart-hear-task",
                                description="Build HEAR 2021 task folders that heareval runs on.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", required=True)

    def task(name: str, help: str, root_help: str, duration_help: str, *options) -> None:
        """One source's subcommand: its root folder, its own ``options`` ((flags, keywords) pairs), then
        the options every source shares."""
        sp = sub.add_parser(name, help=help)
        sp.add_argument("root", help=root_help)
        for flags, keywords in options:
            sp.add_argument(*flags, **keywords)
        sp.add_argument("--out", required=True, help="tasks folder; the task goes to OUT/<name>-<version>-full")
        sp.add_argument("--sample-rates", type=_rates, default=[16000],
                        help="comma-separated rates to write (default 16000; hearbaseline reads 44100)")
        sp.add_argument("--duration", type=float, default=None, help=duration_help)
        sp.add_argument("--workers", type=int, default=1, help="processes decoding audio (default 1)")
        sp.add_argument("--overwrite", action="store_true", help="replace an existing task folder")

    task("gtzan", "GTZAN genres/<genre>/*.wav -> tfds_gtzan-1.0.0-full (10 folds)",
         "folder holding genres/ (or the genres folder itself)",
         "seconds per clip, trimmed or zero padded (default 30, as HEAR)",
         (["--nfolds"], dict(type=int, default=10, help="folds (default 10, as HEAR)")))
    task("mtat", "MagnaTagATune -> mtat_top50-1.0.0-full (train/valid/test)",
         "folder holding annotations_final.csv and the mp3 folders 0/ ... f/",
         "seconds per clip, trimmed or zero padded (default 29.1, the clips' length)",
         (["--top-k"], dict(type=int, default=50, help="most frequent tags kept (default 50)")))
    task("nsynth", "NSynth json/wav -> nsynth_instrument_family-2.2.3-<mode> (train/valid/test)",
         "folder holding nsynth-train/, nsynth-valid/ and nsynth-test/",
         "seconds per note, trimmed or zero padded (default 4, the notes' length)",
         (["--per-class"], dict(type=int, default=None, help="at most this many notes of each instrument "
                                "family in each split (default: all)")),
         (["--seed"], dict(type=int, default=0, help="seed of the --per-class draw (default 0)")))
    task("fma", "FMA-small tracks.csv + mp3s -> fma_small_genre-1.0.0-full (official split)",
         "folder holding fma_metadata/tracks.csv and fma_small/NNN/NNNNNN.mp3",
         "seconds per clip, trimmed or zero padded (default 30, the clips' length)")
    task("irmas", "IRMAS training data -> irmas_instrument-1.0.0-full (80/10/10 by recording)",
         "folder holding IRMAS-TrainingData/<inst>/*.wav (or the instrument folders)",
         "seconds per excerpt, trimmed or zero padded (default 3, the excerpts' length)",
         (["--seed"], dict(type=int, default=0, help="seed of the split by recording (default 0)")))
    task("msd", "MSD split files + 7digital clips -> msd_top50-1.0.0-full (the published split)",
         "folder holding MSD_split/ (or its split files) and, unless --audio-dir, the clips",
         f"seconds per clip, trimmed or zero padded (default {msd.SECONDS}, the lists' shortest clip)",
         (["--audio-dir"], dict(default=None, help="folder holding the clips D/E/<7digital ID>.clip.mp3 "
                                "(default: ROOT)")),
         (["--valid-from"], dict(type=int, default=msd.TRAIN_SIZE,
                                 help=f"where filtered_list_train.cP is cut into train and valid (default "
                                      f"{msd.TRAIN_SIZE}, the published split; change it only for a list of your own)")))
    task("folder", "<label>/<audio files> -> multiclass task with new k folds", None,
         "seconds per clip (default: the 95th percentile of the clips' durations)",
         (["--name"], dict(default=None, help="task name (default: the folder's name)")),
         (["--nfolds"], dict(type=int, default=5)))
    return p


@command("mart-hear-task")
def main(argv: Optional[List[str]] = None) -> int:
    start_console()
    args = _parser().parse_args(argv)
    if args.dataset == "gtzan":
        spec, items = sources.gtzan(args.root, args.nfolds, args.duration or 30.0)
    elif args.dataset == "mtat":
        spec, items = sources.mtat(args.root, args.top_k, args.duration or 29.1)
    elif args.dataset == "nsynth":
        spec, items = sources.nsynth(args.root, args.per_class, args.seed, args.duration or 4.0)
    elif args.dataset == "fma":
        spec, items = sources.fma_small(args.root, args.duration or 30.0)
    elif args.dataset == "irmas":
        spec, items = sources.irmas_training(args.root, args.seed, args.duration or 3.0)
    elif args.dataset == "msd":
        spec, items = sources.msd_tagging(args.root, args.audio_dir, args.valid_from, args.duration or msd.SECONDS)
    else:
        spec, items = sources.folder(args.root, args.name, args.nfolds, args.duration)
    if spec.nfolds is not None and spec.nfolds < 3:
        raise UsageError(f"--nfolds must be at least 3 (test, valid and train folds), got {spec.nfolds}")
    path, skipped = build_task(spec, items, args.out, args.sample_rates, args.overwrite, max(1, args.workers))
    print(f"wrote {path}: {len(items) - len(skipped)} clips, {len(skipped)} skipped, "
          f"{len(spec.labels)} labels, splits {', '.join(spec.splits())}")
    return 0
