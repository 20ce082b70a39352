"""Supervised protocol of the papers: CQT-Net trained on the training works alone, or a pretrained
encoder combined with CQT-Net and fine-tuned ("(pre. FCN) + CQT-Net"), selected by validation MAP.

    mart-cover-song train --train train.csv --valid val.csv --out runs/cqtnet
    mart-cover-song train --train train.csv --valid val.csv --encoder mart.ckpt --out runs/mart_cqtnet
    mart-cover-song eval --manifest test.csv --trained runs/mart_cqtnet/model.pt --out results/
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import logging
import os
import pickle
import random
import sys
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mart_upstream.argtypes import positive
from mart_upstream.audio import load_audio
from mart_upstream.distributed import require_cuda
from mart_upstream.errors import CheckpointError, TaskError, UsageError
from mart_upstream.fileio import atomic_path
from mart_upstream.tasks import covers

from . import search
from .cache import file_identity
from .cqtnet import CQTConfig, CQTNet, EncoderCQTNet, cqt

log = logging.getLogger(__name__)
FORMAT = "mart-cover-song-cqtnet/1"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="manifest CSV of the training works")
    p.add_argument("--valid", help="manifest CSV of validation works (model selection by MAP)")
    p.add_argument("--encoder", help="pretrained checkpoint (mart-pretrain) to combine with CQT-Net and fine-tune")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=positive(int), default=30)
    p.add_argument("--batch-size", type=positive(int), default=32)
    p.add_argument("--lr", type=positive(float), default=1e-3,
                   help="Adam learning rate of CQT-Net and the fusion layer")
    p.add_argument("--encoder-lr", type=positive(float), default=1e-4,
                   help="learning rate of the pretrained encoder")
    p.add_argument("--crop-frames", type=positive(int), default=400,
                   help="training crops, CQT frames (after downsampling)")
    p.add_argument("--downsample", type=positive(int), default=CQTConfig.downsample, help="CQT frames averaged")
    p.add_argument("--stretch", type=positive(float), nargs=2, default=(0.7, 1.3), help="random time-stretch range")
    p.add_argument("--max-seconds", type=positive(float), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def cqt_cached(path: str, cfg: CQTConfig, cache: str, max_seconds: Optional[float]) -> np.ndarray:
    key = hashlib.sha1(repr((file_identity(path), dataclasses.astuple(cfg), max_seconds)).encode()).hexdigest()[:16]
    f = os.path.join(cache, key + ".npy")
    if os.path.isfile(f):
        return np.load(f)
    c = cqt(load_audio(path, cfg.sample_rate, max_seconds).numpy(), cfg)
    with atomic_path(f, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, c)
    return c


def _crop(c: np.ndarray, frames: int, stretch, rng: random.Random) -> torch.Tensor:
    x = torch.from_numpy(c)
    s = rng.uniform(*stretch)
    t = max(1, round(x.shape[1] * s))
    x = F.interpolate(x[None], size=t, mode="linear", align_corners=False)[0]
    if t > frames:
        a = rng.randrange(t - frames + 1)
        x = x[:, a : a + frames]
    return F.pad(x, (0, frames - x.shape[1]))


def _wav_crop(path: str, samples: int, rng: random.Random, max_seconds: Optional[float]) -> torch.Tensor:
    w = load_audio(path, 16000, max_seconds)
    if len(w) > samples:
        a = rng.randrange(len(w) - samples + 1)
        w = w[a : a + samples]
    return F.pad(w, (0, samples - len(w)))


def build(meta: Dict, n_classes: int, device: str):
    if meta.get("encoder"):
        from mart_upstream.checkpoint import load_pretrained

        enc, _ = load_pretrained(meta["encoder"], device)
        enc.requires_grad_(True)
        net = EncoderCQTNet(enc)
    else:
        net = CQTNet()
    head = torch.nn.Linear(net.embedding_dim, n_classes)
    return net.to(device), head.to(device)


@torch.no_grad()
def embed(net, cqts: List[np.ndarray], paths: List[str], device: str, max_seconds: Optional[float]) -> np.ndarray:
    from mart_upstream.embedding import clip_embeddings

    net.eval()
    out = []
    for c, p in zip(cqts, paths):
        x = torch.from_numpy(c)[None].to(device)
        if isinstance(net, EncoderCQTNet):
            e_enc = clip_embeddings(net.encoder, load_audio(p, 16000, max_seconds)[None].to(device))
            e = net.fuse(torch.cat([net.cqtnet.trunk(x), e_enc], dim=1))
        else:
            e = net(x)
        out.append(e[0].float().cpu().numpy())
    return np.stack(out)


def train_main(args) -> int:
    """``mart-cover-song train``: the manifests' CQTs, the network and its optimizer, then epochs of
    classification by work, each validated (where a valid manifest is given) and saved; the log last."""
    require_cuda(args.device)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    cfg = CQTConfig(downsample=args.downsample)
    train, valid, works = _manifests(args)
    print(f"CQT of {len(train) + len(valid)} tracks ...", file=sys.stderr)
    cache = os.path.join(args.out, "cqt_cache")
    c_train = [cqt_cached(t.path, cfg, cache, args.max_seconds) for t in tqdm(train, leave=False, disable=None)]
    c_valid = [cqt_cached(t.path, cfg, cache, args.max_seconds) for t in tqdm(valid, leave=False, disable=None)]
    meta = {"format": FORMAT, "encoder": os.path.abspath(args.encoder) if args.encoder else "",
            "cqt": dataclasses.asdict(cfg), "works": works, "seed": args.seed, "max_seconds": args.max_seconds}
    net, head = build(meta, len(works), args.device)
    opt = _optimizer(net, head, args)
    os.makedirs(args.out, exist_ok=True)
    label = {w: i for i, w in enumerate(works)}
    log_rows, best = [], -1.0
    for epoch in range(1, args.epochs + 1):
        row = {"epoch": epoch, "loss": _epoch(net, head, opt, train, c_train, label, rng, args)}
        if not np.isfinite(row["loss"]):
            raise UsageError(f"training diverged in epoch {epoch} (loss {row['loss']}); lower --lr / --encoder-lr")
        if valid:
            m = search.evaluate(embed(net, c_valid, [t.path for t in valid], args.device, args.max_seconds),
                                [t.work for t in valid])
            row.update({"valid_map": m["map"], "valid_p_at_10": m["p_at_10"], "valid_mr1": m["mr1"]})
        log_rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), file=sys.stderr)
        score = row.get("valid_map", -row["loss"])
        state = {"meta": meta, "net": net.state_dict(), "head": head.state_dict(), "epoch": epoch, "score": score}
        if score > best:
            best = score
            _save(state, os.path.join(args.out, "model.pt"))
        _save(state, os.path.join(args.out, "last.pt"))
    _write_log(log_rows, os.path.join(args.out, "train_log.csv"))
    print(f"best {'valid MAP' if valid else '-loss'} {best:.4f}; model {os.path.join(args.out, 'model.pt')}")
    return 0


def _manifests(args):
    """(train tracks, valid tracks (none without --valid), the training works, sorted)."""
    train = covers.read_manifest(args.train).tracks
    valid = covers.read_manifest(args.valid).tracks if args.valid else []
    works = sorted({t.work for t in train})
    if len(works) < 2:
        raise TaskError(f"{args.train}: training needs at least 2 works, got {len(works)}")
    return train, valid, works


def _optimizer(net, head, args) -> torch.optim.Optimizer:
    """Adam over the head and the CQT network at --lr, and a pretrained encoder (if any) at --encoder-lr."""
    groups = [{"params": list(head.parameters()) + [p for n, p in net.named_parameters() if not n.startswith("encoder.")],
               "lr": args.lr}]
    if isinstance(net, EncoderCQTNet):
        groups.append({"params": list(net.encoder.parameters()), "lr": args.encoder_lr})
    return torch.optim.Adam(groups)


def _epoch(net, head, opt, train, c_train, label, rng: random.Random, args) -> float:
    """One pass over the training tracks in a shuffled order, batches of random crops -> the mean loss."""
    net.train()
    order = list(range(len(train)))
    rng.shuffle(order)
    losses = []
    for s in range(0, len(order), args.batch_size):
        idx = order[s : s + args.batch_size]
        x = torch.stack([_crop(c_train[i], args.crop_frames, args.stretch, rng) for i in idx]).to(args.device)
        y = torch.tensor([label[train[i].work] for i in idx], device=args.device)
        if isinstance(net, EncoderCQTNet):
            wav = torch.stack([_wav_crop(train[i].path, net.encoder.clip_samples, rng, args.max_seconds)
                               for i in idx]).to(args.device)
            e = net(x, wav)
        else:
            e = net(x)
        loss = F.cross_entropy(head(net.drop(e)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _write_log(rows: List[Dict], path: str) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[-1].keys()))
            w.writeheader()
            w.writerows(rows)


def _save(state: Dict, path: str) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


class TrainedSource:
    """Embeddings from a model written by ``mart-cover-song train`` (for ``eval --trained``)."""

    sample_rate = 16000

    def __init__(self, path: str, device: str = "cpu"):
        if not os.path.isfile(path):
            raise CheckpointError(f"trained model {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:  # not a torch file, damaged
            raise CheckpointError(f"cannot read trained model {path}: {e}") from None
        meta = state.get("meta") if isinstance(state, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a model written by `mart-cover-song train`")
        self.meta = meta
        self.cfg = CQTConfig(**self.meta["cqt"])
        self.net, _ = build(self.meta, len(self.meta["works"]), device)
        self.net.load_state_dict(state["net"])
        self.net.eval()
        self.device, self.name = device, f"trained:{os.path.basename(os.path.dirname(os.path.abspath(path)))}"
        self.key = hashlib.sha1(repr(("trained", file_identity(path))).encode()).hexdigest()[:16]

    def __call__(self, wav: torch.Tensor) -> np.ndarray:
        c = cqt(wav.numpy(), self.cfg)
        x = torch.from_numpy(c)[None].to(self.device)
        with torch.no_grad():
            if isinstance(self.net, EncoderCQTNet):
                from mart_upstream.embedding import clip_embeddings

                e = self.net.fuse(torch.cat([self.net.cqtnet.trunk(x), clip_embeddings(self.net.encoder, wav[None].to(self.device))], 1))
            else:
                e = self.net(x)
        return e[0].float().cpu().numpy()
