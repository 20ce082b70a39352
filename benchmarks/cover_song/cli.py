"""``mart-cover-song``: cover-song identification for any encoder.

    mart-cover-song eval --manifest CSV --hear-module hear_api.mart [--model CKPT] --out DIR
    mart-cover-song eval --covers80 ROOT --hear-module hear_api.mart=mart.ckpt --hear-module hearbaseline --out DIR
    mart-cover-song eval --manifest CSV --s3prl-upstream mart=mart.ckpt --s3prl-upstream fbank --out DIR
    mart-cover-song eval --manifest CSV --embeddings EMB --out DIR   # EMB: a mart-embed output of the tracks
    mart-cover-song prepare covers80 ROOT --out DIR             # -> DIR/covers80.csv
    mart-cover-song prepare shs100k LIST AUDIO_DIR --out DIR    # -> SHS100K-SUB split files + manifests
    mart-cover-song train --train CSV --valid CSV --out DIR [--encoder CKPT]  # CQT-Net (+ pretrained encoder)
    mart-cover-song scale --n 100000 --out DIR                  # FAISS vs exact, query latency
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from mart_upstream.argtypes import positive
from mart_upstream.errors import CheckpointError, MartError, UsageError, command
from mart_upstream.fileio import write_json
from mart_upstream.quiet import start_console
from mart_upstream.tasks import covers

from . import report, search

log = logging.getLogger("mart-cover-song")


def _pair(text: str, default_model: str = "") -> Tuple[str, str]:
    name, _, model = text.partition("=")
    return name, model or default_model


def _collection(args) -> covers.Collection:
    given = [x for x in (args.manifest, args.covers80) if x]
    if len(given) != 1:
        raise UsageError("give exactly one of --manifest CSV or --covers80 ROOT")
    return covers.read_manifest(args.manifest) if args.manifest else covers.covers80(args.covers80)


def _sources(args) -> List[Tuple[str, object]]:
    from .embed import CatalogueSource, HearSource, S3prlSource

    specs = ([("hear", m) for m in args.hear_module or []] + [("s3prl", u) for u in args.s3prl_upstream or []]
             + [("trained", t) for t in args.trained or []] + [("embeddings", d) for d in args.embeddings or []])
    if not specs:
        raise UsageError("name at least one model: --hear-module MODULE[=CKPT], --s3prl-upstream NAME[=CKPT] "
                         "or --embeddings DIR")
    if args.model and (len(specs) != 1 or specs[0][0] == "embeddings"):
        raise UsageError("--model goes with a single --hear-module/--s3prl-upstream; "
                         "for several write MODULE=CKPT")
    out = []
    for kind, spec in specs:
        name, model = _pair(spec, args.model or "")
        label = name + (f"@{os.path.splitext(os.path.basename(model))[0]}" if model else "")
        try:
            if kind == "hear":
                src = HearSource(name, model, args.pooling, args.device)
            elif kind == "s3prl":
                src = S3prlSource(name, model, args.layer, args.device)
            elif kind == "embeddings":
                src = CatalogueSource(spec)
                label = src.name
            else:
                from .train import TrainedSource

                src, label = TrainedSource(name, args.device), f"trained:{name}"
        except MartError as e:  # the same error, naming the model
            raise type(e)(f"{label}: {e}") from None
        out.append((label, src))
    return out


def cmd_eval(args) -> int:
    from .embed import embed_tracks

    coll = _collection(args)
    print(f"collection: {coll.summary()}", file=sys.stderr)
    results: Dict[str, Dict] = {}
    meta: Dict[str, Dict] = {}
    cache = args.cache or os.path.join(args.out, "cache")
    for label, src in _sources(args):
        if hasattr(src, "lookup"):  # computed by mart-embed
            emb, kept, bad = src.lookup(coll.tracks, args.max_seconds)
            pooling = f"mart-embed --level {src.catalogue.meta['level']}"
        else:
            emb, kept, bad = embed_tracks(src, coll.tracks, cache, args.max_seconds)
            pooling = args.pooling
        if not np.isfinite(emb).all():
            raise CheckpointError(f"{label}: the model gives NaN or infinite embeddings "
                                  "(damaged or diverged weights)")
        r = search.evaluate(emb, [t.work for t in kept], args.search,
                            search.FaissConfig(top_k=args.top_k, nprobe=args.nprobe))
        results[label] = r
        meta[label] = {"model": label, "n_tracks": len(kept), "n_works": len({t.work for t in kept}),
                       "missing_files": len(coll.missing), "duplicate_entries": coll.duplicates,
                       "unreadable_files": bad,
                       "pooling": pooling, "max_seconds": args.max_seconds}
    files = report.save_run(args.out, results, meta)
    print(report.table(results))
    print("wrote " + ", ".join(files), file=sys.stderr)
    return 0


def cmd_prepare(args) -> int:
    if args.dataset == "covers80":
        coll = covers.covers80(args.root)
        path = os.path.join(args.out, "covers80.csv")
        covers.write_manifest(coll.tracks, path)
        print(f"wrote {path}: {coll.summary()}")
    else:
        splits = covers.shs100k_sub(args.root, args.audio_dir, args.out, args.min_versions, seed=args.seed)
        for name, c in splits.items():
            print(f"{name}: {c.summary()} -> {os.path.join(args.out, name + '.csv')}")
    return 0


def cmd_scale(args) -> int:
    from .scale import run_scale

    res = run_scale(args.n, args.dim, args.queries, args.versions, args.seed,
                    search.FaissConfig(top_k=args.top_k, nprobe=args.nprobe))
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "scale.json"), res)
    print("| N | dim | exact ms/query | FAISS ms/query | FAISS build s | recall@10 vs exact | top-1 agreement | MAP exact | MAP FAISS |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {res['n']} | {res['dim']} | {res['exact_query_ms']:.2f} | {res['faiss_query_ms']:.3f} | "
          f"{res['faiss_build_s']:.1f} | {res['recall_at_10']:.4f} | {res['top1_agreement']:.4f} | "
          f"{res['map_exact']:.4f} | {res['map_faiss']:.4f} |")
    return 0


def cmd_train(args) -> int:
    from .train import train_main

    return train_main(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mart-cover-song", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="zero-shot retrieval with HEAR modules / S3PRL upstreams")
    e.add_argument("--manifest", help="CSV with work_id,version_id,path")
    e.add_argument("--covers80", help="Covers80 root (covers32k/ with list1.list, list2.list)")
    e.add_argument("--hear-module", action="append", help="HEAR module, optionally =CKPT (repeatable)")
    e.add_argument("--s3prl-upstream", action="append", help="S3PRL upstream name, optionally =CKPT (repeatable)")
    e.add_argument("--trained", action="append", help="model.pt written by `mart-cover-song train` (repeatable)")
    e.add_argument("--embeddings", action="append", metavar="DIR",
                   help="a finished `mart-embed` output holding every track of the collection (repeatable): "
                        "its rows are searched, nothing is embedded")
    e.add_argument("--model", help="checkpoint / model file for a single module or upstream")
    e.add_argument("--pooling", choices=["scene", "timestamp"], default="scene",
                   help="HEAR: scene embedding, or the mean of timestamp embeddings")
    e.add_argument("--layer", type=int, default=-1, help="S3PRL: hidden state averaged over time (default last)")
    e.add_argument("--max-seconds", type=positive(float), default=None, help="embed only the first seconds of each track")
    e.add_argument("--search", choices=["auto", "exact", "faiss"], default="auto",
                   help=f"auto: exact up to {search.EXACT_MAX} tracks, FAISS above")
    e.add_argument("--top-k", type=positive(int), default=100, help="FAISS: ranked list length")
    e.add_argument("--nprobe", type=positive(int), default=64, help="FAISS: IVF cells visited per query")
    e.add_argument("--cache", help="embedding cache folder (default OUT/cache)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("prepare", help="manifests (and SHS100K-SUB split files) from published datasets")
    psub = pr.add_subparsers(dest="dataset", required=True)
    c80 = psub.add_parser("covers80")
    c80.add_argument("root")
    shs = psub.add_parser("shs100k", help="SHS100K-SUB: works with > 5 versions, 8:1:1 by work")
    shs.add_argument("root", metavar="LIST", help="SHS100K's list file")
    shs.add_argument("audio_dir", help="downloaded audio: <set>_<ver>.*, <set>/<ver>.* or <youtube id>.*")
    shs.add_argument("--min-versions", type=positive(int), default=6)
    shs.add_argument("--seed", type=int, default=0)
    for sp in (c80, shs):
        sp.add_argument("--out", required=True)
    pr.set_defaults(func=cmd_prepare)

    sc = sub.add_parser("scale", help="FAISS vs exact search on a synthetic catalogue: agreement and latency")
    sc.add_argument("--n", type=positive(int), default=100000)
    sc.add_argument("--dim", type=positive(int), default=512)
    sc.add_argument("--queries", type=positive(int), default=1000)
    sc.add_argument("--versions", type=positive(int), default=5, help="versions per work in the catalogue")
    sc.add_argument("--top-k", type=positive(int), default=100)
    sc.add_argument("--nprobe", type=positive(int), default=64)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--out", required=True)
    sc.set_defaults(func=cmd_scale)

    from .train import add_train_arguments

    add_train_arguments(sub.add_parser("train", help="CQT-Net (optionally with a pretrained FCN) on training works"))
    sub.choices["train"].set_defaults(func=cmd_train)
    return p


@command("mart-cover-song")
def main(argv: Optional[List[str]] = None) -> int:
    start_console()
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
