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

from mart_upstream.errors import UsageError, command
from mart_upstream.quiet import start_console
from mart_upstream.tasks import msd

from . import sources
from .taskfolder import HEAR_SAMPLE_RATES, Item, TaskSpec, assign_kfolds, build_task

__all__ = ["main", "build_task", "assign_kfolds", "Item", "TaskSpec", "sources"]


def _rates(text: str) -> List[int]:
    try:
        rates = [int(r) for r in text.split(",") if r.strip()]
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

    def common(sp, duration_help):
        sp.add_argument("--out", required=True, help="tasks folder; the task goes to OUT/<name>-<version>-full")
        sp.add_argument("--sample-rates", type=_rates, default=[16000],
                        help="comma-separated rates to write (default 16000; hearbaseline reads 44100)")
        sp.add_argument("--duration", type=float, default=None, help=duration_help)
        sp.add_argument("--workers", type=int, default=1, help="processes decoding audio (default 1)")
        sp.add_argument("--overwrite", action="store_true", help="replace an existing task folder")

    g = sub.add_parser("gtzan", help="GTZAN genres/<genre>/*.wav -> tfds_gtzan-1.0.0-full (10 folds)")
    g.add_argument("root", help="folder holding genres/ (or the genres folder itself)")
    g.add_argument("--nfolds", type=int, default=10, help="folds (default 10, as HEAR)")
    common(g, "seconds per clip, trimmed or zero padded (default 30, as HEAR)")

    m = sub.add_parser("mtat", help="MagnaTagATune -> mtat_top50-1.0.0-full (train/valid/test)")
    m.add_argument("root", help="folder holding annotations_final.csv and the mp3 folders 0/ ... f/")
    m.add_argument("--top-k", type=int, default=50, help="most frequent tags kept (default 50)")
    common(m, "seconds per clip, trimmed or zero padded (default 29.1, the clips' length)")

    n = sub.add_parser("nsynth", help="NSynth json/wav -> nsynth_instrument_family-2.2.3-<mode> (train/valid/test)")
    n.add_argument("root", help="folder holding nsynth-train/, nsynth-valid/ and nsynth-test/")
    n.add_argument("--per-class", type=int, default=None,
                   help="at most this many notes of each instrument family in each split (default: all)")
    n.add_argument("--seed", type=int, default=0, help="seed of the --per-class draw (default 0)")
    common(n, "seconds per note, trimmed or zero padded (default 4, the notes' length)")

    a = sub.add_parser("fma", help="FMA-small tracks.csv + mp3s -> fma_small_genre-1.0.0-full (official split)")
    a.add_argument("root", help="folder holding fma_metadata/tracks.csv and fma_small/NNN/NNNNNN.mp3")
    common(a, "seconds per clip, trimmed or zero padded (default 30, the clips' length)")

    r = sub.add_parser("irmas", help="IRMAS training data -> irmas_instrument-1.0.0-full (80/10/10 by recording)")
    r.add_argument("root", help="folder holding IRMAS-TrainingData/<inst>/*.wav (or the instrument folders)")
    r.add_argument("--seed", type=int, default=0, help="seed of the split by recording (default 0)")
    common(r, "seconds per excerpt, trimmed or zero padded (default 3, the excerpts' length)")

    d = sub.add_parser("msd", help="MSD split files + 7digital clips -> msd_top50-1.0.0-full (the published split)")
    d.add_argument("root", help="folder holding MSD_split/ (or its split files) and, unless --audio-dir, the clips")
    d.add_argument("--audio-dir", default=None,
                   help="folder holding the clips D/E/<7digital ID>.clip.mp3 (default: ROOT)")
    d.add_argument("--valid-from", type=int, default=msd.TRAIN_SIZE,
                   help=f"where filtered_list_train.cP is cut into train and valid (default {msd.TRAIN_SIZE}, "
                        "the published split; change it only for a list of your own)")
    common(d, f"seconds per clip, trimmed or zero padded (default {msd.SECONDS}, the lists' shortest clip)")

    f = sub.add_parser("folder", help="<label>/<audio files> -> multiclass task with new k folds")
    f.add_argument("root")
    f.add_argument("--name", default=None, help="task name (default: the folder's name)")
    f.add_argument("--nfolds", type=int, default=5)
    common(f, "seconds per clip (default: the 95th percentile of the clips' durations)")
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
