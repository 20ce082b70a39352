"""A run's state made small enough to carry between machines, and continued from there.

A pretraining run on a lent GPU lasts one window; the next window continues it only if the state it
needs travels back and forth. ``last.ckpt`` holds float32 weights and Adam's two moments: 12 bytes
per parameter (MART at the papers' size: 20 M parameters, 240 MB). Three forms (``MODES``):

* ``full``: ``last.ckpt`` as it is; the continuation is exact.
* ``compact``: float32 weights and buffers; Adam's first and second moments (``exp_avg``,
  ``exp_avg_sq``) in bfloat16 (8 bit mantissa, float32's range, so no moment underflows): 8 bytes
  per parameter. The continuation differs from the uninterrupted run by the moments' rounding.
* ``small``: float32 tensors in float16 where that round trip is within ``FP16_REL_ERROR`` of their
  norm (others, and float64 statistics, as they are); Adam's first moment dropped (zero after the
  hand-over: it is re-estimated within about 1 / (1 - beta1) = 10 steps, and those steps are smaller);
  the second moment of every matrix factored into its row and column sums (Adafactor, Shazeer and
  Stern 2018, eq. 4: V ~ R C / sum(R)), vectors kept in bfloat16: about 2 bytes per parameter (MART
  40 MB). Costs: one rounding of the weights to float16 per hand-over and the moments' approximation.

``tests/test_handover.py`` measures each form against one uninterrupted run (a run split into three
parts). ``mart-pretrain --resume`` continues any of them: the optimizer's moments are rebuilt here,
and ``load_state_dict`` casts weights back to float32.

    python -m mart_upstream.train.handover RUN/last.ckpt OUT.ckpt [--mode small]
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional

import torch

from ..checkpoint import read_checkpoint, write_state
from ..errors import CheckpointError, UsageError, command

MODES = ("full", "compact", "small")
FP16_REL_ERROR = 1e-3
FP16_MAX = 6.0e4


def _to_fp16_if_close(t: torch.Tensor) -> torch.Tensor:
    if t.dtype != torch.float32 or not t.numel():
        return t
    if t.abs().max() >= FP16_MAX:
        return t
    h = t.half()
    err = (h.float() - t).norm() / t.norm().clamp_min(1e-30)
    return h if err <= FP16_REL_ERROR else t


def _reduce_moments(st: Dict, mode: str) -> Dict:
    out = {"step": st["step"]}
    if mode == "compact":
        out["exp_avg"] = st["exp_avg"].to(torch.bfloat16)
        out["exp_avg_sq"] = st["exp_avg_sq"].to(torch.bfloat16)
        return out
    v = st["exp_avg_sq"].float()
    if v.dim() >= 2:
        m = v.reshape(v.shape[0], -1)
        out["v_rows"], out["v_cols"] = m.sum(dim=1), m.sum(dim=0)  # Adafactor eq. 4: R and C
        out["v_shape"] = torch.tensor(list(v.shape), dtype=torch.int64)
    else:
        out["exp_avg_sq"] = v.to(torch.bfloat16)
    return out


def reduce_state(state: Dict, mode: str) -> Dict:
    """A run's checkpoint dict (``last.ckpt``, with its optimizer) in the form ``mode``."""
    if mode not in MODES:
        raise UsageError(f"hand-over mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not state.get("optimizer"):
        raise CheckpointError("the checkpoint holds no optimizer state: only a run's last.ckpt can be handed over")
    out = {k: v for k, v in state.items() if k not in ("sha256", "format_version")}
    out["handover"] = {"mode": mode, "from_sha256": state.get("sha256")}
    if mode == "full":
        return out
    if mode == "small":
        out["model"] = {k: _to_fp16_if_close(v) for k, v in state["model"].items()}
    opt = state["optimizer"]
    out["optimizer"] = {"param_groups": opt["param_groups"],
                        "state": {i: _reduce_moments(st, mode) for i, st in opt["state"].items()}}
    return out


def expand_optimizer(opt: Dict) -> Dict:
    """An Adam state dict of any hand-over form -> one ``torch.optim.Adam.load_state_dict`` takes."""
    state = {}
    for i, st in opt["state"].items():
        new = {"step": st["step"]}
        if "v_rows" in st:
            r, c = st["v_rows"].float(), st["v_cols"].float()
            shape = tuple(int(x) for x in st["v_shape"].tolist())
            v = (torch.outer(r, c) / r.sum().clamp_min(1e-30)).reshape(shape)
        else:
            v = st["exp_avg_sq"].float()
        new["exp_avg_sq"] = v
        new["exp_avg"] = st["exp_avg"].float() if "exp_avg" in st else torch.zeros_like(v)
        state[i] = new
    return {"state": state, "param_groups": opt["param_groups"]}


def state_bytes(state: Dict) -> int:
    """Bytes of all tensors of a checkpoint dict (what a transfer carries, before the file's overhead)."""
    total = 0

    def walk(x) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(state)
    return total


def write_handover(src: str, dst: str, mode: str = "small") -> Dict:
    """Read ``src`` (a run's last.ckpt), write its ``mode`` form to ``dst`` atomically; -> sizes."""
    state = read_checkpoint(src)
    reduced = reduce_state(state, mode)
    write_state(dst, reduced)
    return {"mode": mode, "step": int(state["step"]), "bytes_full": state_bytes(state),
            "bytes": state_bytes(reduced), "optimizer_bytes_full": state_bytes(state["optimizer"]),
            "optimizer_bytes": state_bytes(reduced["optimizer"]), "model_bytes_full": state_bytes(state["model"]),
            "model_bytes": state_bytes(reduced["model"])}


@command("mart-handover")
def _main(args) -> int:
    info = write_handover(args.src, args.dst, args.mode)
    print(f"wrote {args.dst}: step {info['step']}, {args.mode} state {info['bytes'] / 2**20:.1f} MiB "
          f"(full {info['bytes_full'] / 2**20:.1f} MiB)")
    return 0


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mart_upstream.train.handover", description=__doc__.split("\n")[0])
    p.add_argument("src", help="a run's last.ckpt")
    p.add_argument("dst", help="the state to carry (resume it as OUT/last.ckpt with mart-pretrain --resume)")
    p.add_argument("--mode", choices=MODES, default="small")
    return _main(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
