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

from mart_upstream.argtypes import comma_list
from mart_upstream.fileio import atomic_path
from mart_upstream.errors import UsageError

from .evaluation import Entry


def parse_steps(text: Optional[str]) -> List[int]:
    if not text:
        return []
    try:
        steps = sorted(set(comma_list(text, int)))
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


EXTRA = (("soundtrack", "soundtrack top1_acc (CV)"), ("tracks", "same-track MAP"), ("mpr", "playlist MPR (lower better)"))


def _score(e: Dict, metric: str) -> Optional[float]:
    if metric in ("style", "soundtrack"):
        cv = (e.get(metric) or {}).get("cv")
        return float(np.mean(cv["correct"])) if cv else None
    if metric == "tracks":
        return (e.get("tracks") or {}).get("map")
    if metric == "mpr":
        return (e.get("playlists") or {}).get("mpr")
    return (e.get("covers") or {}).get("map")


def _extra(e: Dict) -> tuple:
    """The other tasks' scores of an entry: soundtrack CV top1_acc, same-track MAP, playlist MPR (None where absent)."""
    return tuple(_score(e, m) for m, _ in EXTRA)


def curves(entries_: List[Dict], curve_entries: List[Dict], runs: List[Dict], random_rows: Dict[str, str]) -> List[Dict]:
    """Per model and seed: [(step, style CV top1_acc, cover MAP)] from random init to the final step, and
    beside them ``extra``: [(step, soundtrack CV top1_acc, same-track MAP, playlist MPR)] (None where not measured)."""
    out = []
    for r in runs:
        points, extra = [], {}
        ref = next((e for e in entries_ if e["row"] == random_rows[r["model"]]), None)
        if ref is not None:
            points.append((0, _score(ref, "style"), _score(ref, "covers")))
            extra[0] = _extra(ref)
        for e in curve_entries:
            m = re.fullmatch(rf"{r['model']}-seed{r['seed']}-step(\d+)", e["key"])
            if m:
                points.append((int(m.group(1)), _score(e, "style"), _score(e, "covers")))
                extra[int(m.group(1))] = _extra(e)
        final = next((e for e in entries_ if e["key"] == f"{r['model']}-seed{r['seed']}"), None)
        if final is not None:
            extra[r["steps"]] = _extra(final)
            points.append((r["steps"], _score(final, "style"), _score(final, "covers")))
        out.append({"model": r["model"], "seed": r["seed"], "points": sorted(points),
                    "extra": sorted((step, *vals) for step, vals in extra.items())})
    return out


def markdown(curves_: List[Dict]) -> List[str]:
    """The curves as a table; the soundtrack, same-track and playlist columns where some point has them."""
    more = [i for i, _ in enumerate(EXTRA) if any(row[1 + i] is not None for c in curves_ for row in c.get("extra", []))]
    lines = ["", "Learning curves (step 0: random init; style: grouped-CV top1_acc; covers: MAP):", "",
             "| model | seed | step | style top1_acc | cover MAP |" + "".join(f" {EXTRA[i][1]} |" for i in more),
             "|---|---:|---:|---:|---:|" + "---:|" * len(more)]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for c in curves_:
        extra = {row[0]: row[1:] for row in c.get("extra", [])}
        for step, style, cov in c["points"]:
            cells = "".join(f" {fmt((extra.get(step) or (None,) * len(EXTRA))[i])} |" for i in more)
            lines.append(f"| {c['model']} | {c['seed']} | {step} | {fmt(style)} | {fmt(cov)} |" + cells)
    return lines


def plot(curves_: List[Dict], path: str) -> None:
    """One panel per task: style, covers, and the soundtrack, same-track and playlist ones where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []  # (label, [(step, value)] per curve)
    series.append(("style top1_acc (grouped CV)", [[(p[0], p[1]) for p in c["points"]] for c in curves_]))
    series.append(("cover MAP", [[(p[0], p[2]) for p in c["points"]] for c in curves_]))
    for i, (_, label) in enumerate(EXTRA):
        pts = [[(row[0], row[1 + i]) for row in c.get("extra", [])] for c in curves_]
        if any(v is not None for p in pts for _, v in p):
            series.append((label, pts))
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series) + 1, 4), squeeze=False)
    for ax, (label, per_curve) in zip(axes[0], series):
        for c, pts in zip(curves_, per_curve):
            ax.plot([max(s, 1) for s, _ in pts], [np.nan if v is None else v for _, v in pts], marker="o",
                    label=f"{c['model']} seed {c['seed']}")  # step 0 drawn at 1 on the log axis
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
