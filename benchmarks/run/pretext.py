"""Does a run memorise its pool? Its pretext task scored on the pool it trained on and on audio it never saw.

    python -m benchmarks.run.pretext RUN/last.ckpt --pool DATA/pretrain --held-out DATA/raw/soundtrack \
        [--held-out DATA/raw/style] [--batches 8] [--batch-size 32]

For each folder: ``batches`` batches of the views the model trains on (the run's own crops,
augmentations and training forward, ``torch.no_grad``, BatchNorm on batch statistics as in training,
on a copy of the model), scored by the run's diagnostics: the loss, the positive pair's cosine and
``pair_top1``, the share of views whose positive is the nearest of the batch (chance 1 / batch).
A pool much easier than held-out audio at the same step says the model learns its pool's files
rather than music: more audio, not more steps, is what it needs. Batches are drawn with a fixed seed,
so two checkpoints of one run are scored on the same crops.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from mart_upstream.augment import AugmentationChain, read_samples
from mart_upstream.checkpoint import read_checkpoint
from mart_upstream.config import from_dict
from mart_upstream.errors import CheckpointError, UsageError, command
from mart_upstream.models import build_config, build_model
from mart_upstream.train.data import RandomCropDataset, scan_audio_files
from mart_upstream.train.diagnostics import learning_diagnostics
from mart_upstream.train.settings import PretrainConfig

METRICS = ("loss", "pos_cos", "pair_top1")


def load_run(path: str):
    """A run's checkpoint -> (model in training mode, its pretraining settings)."""
    state = read_checkpoint(path)
    stored = (state.get("pretrain") or {}).get("settings")
    if not stored:
        raise CheckpointError(f"{path} keeps no pretraining settings: score a run's last.ckpt or step_N.ckpt")
    name = state["model_name"]
    model = build_model(name, build_config(name, state["config"]))
    model.load_state_dict(state["model"])
    return model.train(), from_dict(PretrainConfig, stored, "checkpoint settings")


@torch.no_grad()
def score_folder(model, cfg: PretrainConfig, folder: str, batches: int = 8, batch_size: int = 32,
                 seed: int = 12345) -> Dict:
    """Mean diagnostics of ``batches`` training batches drawn from ``folder`` (fixed seed)."""
    files = scan_audio_files(folder, min_seconds=model.clip_samples / model.config.frontend.sample_rate,
                             progress=False)
    data = RandomCropDataset(files, read_samples(model.clip_samples, cfg.augment), num_crops=model.num_views,
                             sample_rate=model.config.frontend.sample_rate, seed=seed, pairing=model.pairing,
                             gap_seconds=model.pairing_gap_seconds)
    augment = AugmentationChain(cfg.augment)
    net = copy.deepcopy(model)  # BatchNorm statistics move in training mode: keep the caller's model as it is
    rows: List[Dict[str, float]] = []
    for i in range(batches):
        batch = torch.stack([data[i * batch_size + j] for j in range(batch_size)])  # [B, V, T]
        b, v, t = batch.shape
        gen = torch.Generator().manual_seed(seed + i)
        torch.manual_seed(seed + i)
        views = augment(batch.reshape(b * v, t), gen, out_samples=model.clip_samples).reshape(b, v, -1)
        out = net(views)
        row = {"loss": float(out["loss"])}
        if all(k in out for k in ("z1", "z2", "emb")):
            row.update({k: d for k, d in learning_diagnostics(out["z1"], out["z2"], out["emb"]).items()
                        if k in METRICS})
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"files": len(files), "batches": batches,
                                                                         "batch_size": batch_size}


@command("pretext")
def _main(args) -> int:
    if args.batches < 1 or args.batch_size < 2:
        raise UsageError("--batches must be at least 1 and --batch-size at least 2")
    model, cfg = load_run(args.checkpoint)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = {"checkpoint": os.path.abspath(args.checkpoint), "chance_pair_top1": 1.0 / args.batch_size,
           "pool": {"folder": args.pool, **score_folder(model, cfg, args.pool, args.batches, args.batch_size)},
           "held_out": [{"folder": f, **score_folder(model, cfg, f, args.batches, args.batch_size)}
                        for f in args.held_out]}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        from mart_upstream.fileio import write_text

        write_text(args.out, text + "\n")
    return 0


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run.pretext", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a run's last.ckpt or step_N.ckpt")
    p.add_argument("--pool", required=True, help="the folder the run pretrained on")
    p.add_argument("--held-out", action="append", default=[], help="a folder of audio the run never saw (repeatable)")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="write the scores as JSON here too")
    return _main(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
