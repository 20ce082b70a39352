"""Learning curves: the benchmark's scores at intermediate steps of each pretraining run.

``mart-bench run --curve 300,1000`` keeps the weights at those steps (``mart-pretrain --keep-steps``,
``OUT/.../step_<N>.ckpt``; with ``--checkpoints DIR`` the files ``DIR/<model>/step_<N>.ckpt`` a GPU run
kept) and evaluates each like the final checkpoint. A curve per model runs from its random init
(step 0) through the kept steps to the final checkpoint: a method that learns rises along it.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import numpy as np

from mart_upstream.fileio import atomic_path
from mart_upstream.errors import UsageError

from .evaluation import Entry


def parse_steps(text: Optional[str]) -> List[int]:
    if not text:
        return []
    try:
        steps = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--curve must be comma-separated step numbers, got {text!r}") from None
    if any(s <= 0 for s in steps):
        raise UsageError(f"--curve steps must be positive, got {text!r}")
    return steps


def kept_checkpoints(run: Dict, steps: List[int]) -> Dict[int, str]:
    """step -> kept checkpoint of ``run`` (beside its checkpoint, or in a folder named after the model)."""
    folder = os.path.dirname(run["checkpoint"])
    found = {}
    for d in (folder, os.path.join(folder, run["model"])):
        for s in steps:
            p = os.path.join(d, f"step_{s}.ckpt")
            if s < run["steps"] and os.path.isfile(p):
                found.setdefault(s, p)
    return found


def entries(runs: List[Dict], steps: List[int]) -> List[Entry]:
    out = []
    for r in runs:
        for s, path in sorted(kept_checkpoints(r, steps).items()):
            out.append(Entry(f"{r['model']} @ step {s}", f"{r['model']}-seed{r['seed']}-step{s}", f"hear_api.{r['model']}",
                             path, r["seed"]))
    return out


def _score(e: Dict, metric: str) -> Optional[float]:
    if metric == "style":
        cv = (e.get("style") or {}).get("cv")
        return float(np.mean(cv["correct"])) if cv else None
    return (e.get("covers") or {}).get("map")


def curves(entries_: List[Dict], curve_entries: List[Dict], runs: List[Dict], random_rows: Dict[str, str]) -> List[Dict]:
    """Per model and seed: [(step, style CV top1_acc, cover MAP)] from random init to the final step."""
    out = []
    for r in runs:
        points = []
        ref = next((e for e in entries_ if e["row"] == random_rows[r["model"]]), None)
        if ref is not None:
            points.append((0, _score(ref, "style"), _score(ref, "covers")))
        for e in curve_entries:
            m = re.fullmatch(rf"{r['model']}-seed{r['seed']}-step(\d+)", e["key"])
            if m:
                points.append((int(m.group(1)), _score(e, "style"), _score(e, "covers")))
        final = next((e for e in entries_ if e["key"] == f"{r['model']}-seed{r['seed']}"), None)
        if final is not None:
            points.append((r["steps"], _score(final, "style"), _score(final, "covers")))
        out.append({"model": r["model"], "seed": r["seed"], "points": sorted(points)})
    return out


def markdown(curves_: List[Dict]) -> List[str]:
    lines = ["", "Learning curves (step 0: random init; style: grouped-CV top1_acc; covers: MAP):", "",
             "| model | seed | step | style top1_acc | cover MAP |", "|---|---:|---:|---:|---:|"]
    for c in curves_:
        for step, style, cov in c["points"]:
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {c['model']} | {c['seed']} | {step} | {fmt(style)} | {fmt(cov)} |")
    return lines


def plot(curves_: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in curves_:
        pts = [p for p in c["points"]]
        x = [max(p[0], 1) for p in pts]  # step 0 drawn at 1 on the log axis
        for ax, i in zip(axes, (1, 2)):
            ys = [p[i] for p in pts]
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=f"{c['model']} seed {c['seed']}")
    for ax, label in zip(axes, ("style top1_acc (grouped CV)", "cover MAP")):
        ax.set_xscale("log")
        ax.set_xlabel("pretraining step (1 = random init)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mart-bench run: scores against pretraining steps")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
