"""Learning curves: the benchmark's scores at intermediate steps of each pretraining run.

``mart-bench run --curve 300,1000`` keeps the weights at those steps (``mart-pretrain --keep-steps``,
``OUT/.../step_<N>.ckpt``; with ``--checkpoints DIR`` the files ``DIR/<model>/step_<N>.ckpt`` a GPU run
kept) and evaluates each like the final checkpoint. A curve per model runs from its random init
(step 0) through the kept steps to the final checkpoint: a method that learns rises along it.

``trend`` reads a curve as a measurement: at every point the paired difference against the random init
(95% interval over works, tracks or playlists), and the slope of that difference per doubling of the
steps (least squares on log2(step) over the trained points, the same bootstrap resamples at every point),
with what the fitted line predicts: the step at which the difference would reach the half-width of its
interval at the last point, the least a difference of that noise must be to be told from 0.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import numpy as np

from mart_upstream.argtypes import comma_list
from mart_upstream.fileio import atomic_path
from mart_upstream.errors import UsageError

from mart_upstream.tasks.metrics import grouped_resamples

from .evaluation import Entry
from .report import item_scores


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


def _run_points(r: Dict, entries_: List[Dict], curve_entries: List[Dict], random_rows: Dict[str, str]):
    """One run's curve: its random-init entry (None if absent) and [(step, entry)] of its kept steps and its
    final checkpoint."""
    ref = next((e for e in entries_ if e["row"] == random_rows[r["model"]]), None)
    points = []
    for e in curve_entries:
        m = re.fullmatch(rf"{r['model']}-seed{r['seed']}-step(\d+)", e["key"])
        if m:
            points.append((int(m.group(1)), e))
    final = next((e for e in entries_ if e["key"] == f"{r['model']}-seed{r['seed']}"), None)
    if final is not None:
        points.append((r["steps"], final))
    return ref, points


def curves(entries_: List[Dict], curve_entries: List[Dict], runs: List[Dict], random_rows: Dict[str, str]) -> List[Dict]:
    """Per model and seed: [(step, style CV top1_acc, cover MAP)] from random init to the final step, and
    beside them ``extra``: [(step, soundtrack CV top1_acc, same-track MAP, playlist MPR)] (None where not measured)."""
    out = []
    for r in runs:
        ref, trained = _run_points(r, entries_, curve_entries, random_rows)
        every = ([(0, ref)] if ref is not None else []) + trained
        out.append({"model": r["model"], "seed": r["seed"],
                    "points": sorted((s, _score(e, "style"), _score(e, "covers")) for s, e in every),
                    "extra": sorted((s, *_extra(e)) for s, e in dict(every).items())})
    return out


MAX_DOUBLINGS = 10  # beyond 1024x the steps of the last point, an extrapolation says nothing

# the tasks of ``trend`` (``report.item_scores`` keys) and their labels; SIGN -1 where lower is better
TREND_TASKS = (("soundtrack", "soundtrack top1_acc (CV)"), ("tracks", "same-track MAP"),
               ("style", "style top1_acc (CV)"), ("covers", "cover MAP"), ("mpr", "playlist MPR (lower better)"))
SIGN = {"mpr": -1}


def _item_names(e: Dict, task: str) -> list:
    """What two entries' items must agree on to be paired: the clips (CV tasks), the queries' works or
    tracks (retrieval), the (playlist, track) of each held-out item (playlists)."""
    if task in ("style", "soundtrack"):
        return e[task]["cv"]["names"]
    if task in ("covers", "tracks"):
        return e[task]["query_works"]
    return list(zip(e["playlists"]["item_playlist"], e["playlists"]["item_track"]))


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of y [..., P] on x [P]."""
    xc = x - x.mean()
    return (y - y.mean(-1, keepdims=True)) @ xc / float(xc @ xc)


def trend_of(points: List[tuple], ref: Dict, task: str, n_boot: int = 2000, seed: int = 0) -> Optional[Dict]:
    """One task along one curve. ``points``: [(step, entry)] of the trained checkpoints; ``ref``: the random
    init (step 0). -> per point the paired difference against ``ref`` with its 95% interval, and the slope
    per doubling of steps with its interval (None where fewer than 2 points have the task)."""
    base = item_scores([ref], task)
    if base is None:
        return None
    rows = []
    for step, e in sorted(points, key=lambda p: p[0]):
        got = item_scores([e], task)
        if got is not None and got[0].shape == base[0].shape and _item_names(e, task) == _item_names(ref, task):
            rows.append((step, got[0]))
    if len(rows) < 2:
        return None
    steps = np.array([s for s, _ in rows], dtype=np.float64)
    d = np.stack([v for _, v in rows]) - base[0]  # [P, N]
    # the same resamples of units at every point: each point's interval, and the slope's, keep the pairing
    boot = grouped_resamples(d, base[1], n_boot, seed)  # [P, B]
    per_point = []
    for s, row, b in zip(steps, d, boot):
        lo_, hi_ = np.percentile(b, [2.5, 97.5])
        per_point.append({"step": int(s), "diff": float(row.mean()), "ci_low": float(lo_), "ci_high": float(hi_)})
    x = np.log2(steps)
    means = d.mean(1)
    slope = float(_slope(x, means))
    lo, hi = np.percentile(_slope(x, boot.T), [2.5, 97.5])
    last = per_point[-1]
    half = (last["ci_high"] - last["ci_low"]) / 2
    fitted_last = float(means.mean() + slope * (x[-1] - x.mean()))
    out = {"task": task, "points": per_point, "slope_per_doubling": slope, "slope_ci": [float(lo), float(hi)],
           "from_step": int(steps[0]), "to_step": int(steps[-1]), "half_width": float(half),
           "fitted_last": fitted_last}
    sign = SIGN.get(task, 1)
    above = last["ci_low"] > 0 if sign > 0 else last["ci_high"] < 0
    below = last["ci_high"] < 0 if sign > 0 else last["ci_low"] > 0
    if above:
        out["prediction"] = "separated at the last point"
    elif below:
        out["prediction"] = "below the random init at the last point"
    elif sign * slope <= 0:
        out["prediction"] = "not rising: nothing to extrapolate"
    else:
        doublings = max(0.0, (half - sign * fitted_last) / (sign * slope))
        flat = lo <= 0 <= hi  # the slope itself is not told from 0
        if doublings > MAX_DOUBLINGS:
            out["prediction"] = (f"{'flat (slope interval contains 0): ' if flat else ''}the fitted line needs more "
                                 f"than {MAX_DOUBLINGS} doublings ({2 ** MAX_DOUBLINGS:,}x the steps) to reach "
                                 f"{sign * half:+.3f} (the interval's half-width)")
        else:
            out["predicted_step"] = int(round(steps[-1] * 2 ** doublings))
            out["prediction"] = (f"{'flat (slope interval contains 0), so only a guess: ' if flat else ''}the fitted "
                                 f"line reaches {sign * half:+.3f} (the interval's half-width) at about step "
                                 f"{out['predicted_step']:,} ({doublings:.1f} more doublings)")
    return out


def trends(entries_: List[Dict], curve_entries: List[Dict], runs: List[Dict], random_rows: Dict[str, str]) -> List[Dict]:
    """``trend_of`` for every run and task of ``TREND_TASKS`` where the curve has at least two trained points."""
    out = []
    for r in runs:
        ref, points = _run_points(r, entries_, curve_entries, random_rows)
        if ref is None:
            continue
        tasks = [t for t in (trend_of(points, ref, task) for task, _ in TREND_TASKS) if t]
        if tasks:
            out.append({"model": r["model"], "seed": r["seed"], "tasks": tasks})
    return out


def trend_markdown(trends_: List[Dict]) -> List[str]:
    """Per run: the paired difference against the random init at each point, then the slope and its prediction."""
    lines = []
    label = dict(TREND_TASKS)
    for tr in trends_:
        steps = sorted({p["step"] for t in tr["tasks"] for p in t["points"]})
        lines += ["", f"{tr['model']} seed {tr['seed']} against its random init (paired; 95% interval over works, "
                  "tracks or playlists), and the slope per doubling of steps (least squares on log2(step) over "
                  "the trained points; one seed: the interval is over the evaluation units, not over training runs):",
                  "", "| task | " + " | ".join(f"step {s}" for s in steps) + " | slope per doubling | what the line predicts |",
                  "|---|" + "---|" * (len(steps) + 2)]
        for t in tr["tasks"]:
            at = {p["step"]: p for p in t["points"]}
            cells = [f"{at[s]['diff']:+.3f} [{at[s]['ci_low']:+.3f}, {at[s]['ci_high']:+.3f}]" if s in at else "–"
                     for s in steps]
            lo, hi = t["slope_ci"]
            lines.append(f"| {label[t['task']]} | " + " | ".join(cells)
                         + f" | {t['slope_per_doubling']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {t['prediction']} |")
    return lines


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
