"""The benchmark's table: rows over seeds (mean ± std), comparisons, Markdown and a PNG chart."""
from __future__ import annotations

from typing import Dict, List

from mart_upstream.fileio import atomic_path

import numpy as np

from mart_upstream.tasks.metrics import grouped_bootstrap

from .evaluation import COVER_METRICS, PLAYLIST_METRICS, SOUNDTRACK_METRICS, STYLE_METRICS, TRACK_METRICS, summarise
from .paired import paired_difference

COLUMNS = [("style", m) for m in STYLE_METRICS] + [("covers", m) for m in COVER_METRICS]
PLAYLIST_COLUMNS = [("playlists", m) for m in PLAYLIST_METRICS]  # shown when the data has playlists
RECORDING_COLUMNS = ([("soundtrack", m) for m in SOUNDTRACK_METRICS]  # shown when the data has recordings
                     + [("tracks", m) for m in TRACK_METRICS])
HEADERS = {("style", "top1_acc"): "style top1_acc", ("style", "mAP"): "style mAP",
           ("covers", "map"): "cover MAP", ("covers", "p_at_10"): "cover P@10", ("covers", "mr1"): "cover MR1 (lower better)",
           ("playlists", "hr_at_10"): "playlist HR@10", ("playlists", "mpr"): "playlist MPR (lower better)",
           ("soundtrack", "top1_acc"): "soundtrack top1_acc (CV)", ("soundtrack", "mAP"): "soundtrack mAP (CV)",
           ("tracks", "map"): "same-track MAP", ("tracks", "top1"): "same-track P@1"}
HIGHER_IS_BETTER = {("covers", "mr1"): False, ("playlists", "mpr"): False}
LOWER_IS_BETTER_LABELS = {HEADERS[k] for k, higher in HIGHER_IS_BETTER.items() if not higher}
MFCC_ROW = "MFCC statistics"
CHROMA_ROW = "chroma statistics (key-invariant on covers)"
MUSICNN_ROW = "MusiCNN (published MTT weights, penultimate)"


def table_rows(entries: List[Dict]) -> List[Dict]:
    """Entries (one per model and seed) -> rows in first-seen order, each metric summarised over seeds."""
    rows: Dict[str, Dict] = {}
    for e in entries:
        row = rows.setdefault(e["row"], {"row": e["row"], "seeds": [], "entries": []})
        row["entries"].append(e["key"])
        if e.get("seed") is not None:
            row["seeds"].append(e["seed"])
    for row in rows.values():
        mine = [e for e in entries if e["row"] == row["row"]]
        for task, metric in COLUMNS + PLAYLIST_COLUMNS + RECORDING_COLUMNS:
            values = [e[task][metric] for e in mine if e.get(task)]
            if values:
                row[f"{task}_{metric}"] = summarise(values)
    return list(rows.values())


def columns(rows: List[Dict]) -> List:
    """The table's columns: style and covers, and the playlist and recordings ones when some row has them."""
    return COLUMNS + [c for c in PLAYLIST_COLUMNS + RECORDING_COLUMNS if any(f"{c[0]}_{c[1]}" in r for r in rows)]


def _cell(stats) -> str:
    if stats is None:
        return "–"
    if stats["n"] > 1:
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}"


def random_row(model: str) -> str:
    """The table row of ``model``'s random-init encoder: pemr and simclr share one (the same FCN-4 built
    with the same seed); every other model has its own."""
    return "FCN-4 encoder (random init; pemr, simclr)" if model in ("pemr", "simclr") else f"{model} (random init)"


def comparisons(rows: List[Dict], models=("mart", "pemr")) -> List[Dict]:
    """Each of ``models`` against its random-init encoder, MFCC, simclr and chroma: mean over seeds better?"""
    by_name = {r["row"]: r for r in rows}
    out = []
    for m in models:
        if m not in by_name:
            continue
        for ref in (random_row(m), MFCC_ROW, "simclr", CHROMA_ROW):
            if ref not in by_name:
                continue
            for task, metric in COLUMNS + PLAYLIST_COLUMNS + RECORDING_COLUMNS:
                a, b = by_name[m].get(f"{task}_{metric}"), by_name[ref].get(f"{task}_{metric}")
                if a is None or b is None:
                    continue
                higher = HIGHER_IS_BETTER.get((task, metric), True)
                better = a["mean"] > b["mean"] if higher else a["mean"] < b["mean"]
                out.append({"model": m, "reference": ref, "metric": HEADERS[(task, metric)], "model_mean": a["mean"],
                            "reference_mean": b["mean"], "better": bool(better)})
    return out


def paired_metrics(model_entries: List[Dict], ref: Dict) -> Dict[str, Dict]:
    """One model's entries (its seeds) against one reference entry, item by item on the same data."""
    out: Dict[str, Dict] = {}
    cvs = [e["style"].get("cv") for e in model_entries if "style" in e]
    ref_cv = ref.get("style", {}).get("cv")
    if cvs and all(cvs) and ref_cv and all(cv["names"] == ref_cv["names"] for cv in cvs):
        mine = np.mean([cv["correct"] for cv in cvs], axis=0)
        d = paired_difference(mine, ref_cv["correct"], ref_cv["groups"])
        per_seed = [float(np.mean(cv["correct"]) - np.mean(ref_cv["correct"])) for cv in cvs]
        out["style top1_acc (grouped CV)"] = dict(d, seed_diffs=per_seed)
        per_seed_map = [cv["mAP"] - ref_cv["mAP"] for cv in cvs]
        out["style mAP (grouped CV)"] = {"diff": float(np.mean(per_seed_map)), "seed_diffs": per_seed_map}
    aps = [e["covers"].get("query_ap") for e in model_entries if "covers" in e]
    ref_ap = ref.get("covers", {}).get("query_ap")
    if aps and all(aps) and ref_ap and all(len(a) == len(ref_ap) for a in aps):
        a = np.array([[np.nan if v is None else v for v in ap] for ap in aps], dtype=np.float64)
        r = np.array([np.nan if v is None else v for v in ref_ap], dtype=np.float64)
        ok = ~np.isnan(r) & ~np.isnan(a).any(0)
        works = np.asarray(ref["covers"]["query_works"])[ok]
        d = paired_difference(a[:, ok].mean(0), r[ok], works)
        out["cover MAP"] = dict(d, seed_diffs=[float(x[ok].mean() - r[ok].mean()) for x in a])
    sts = [(e.get("soundtrack") or {}).get("cv") for e in model_entries]
    ref_st = (ref.get("soundtrack") or {}).get("cv")
    if sts and all(sts) and ref_st and all(cv["names"] == ref_st["names"] for cv in sts):
        mine = np.mean([cv["correct"] for cv in sts], axis=0)
        d = paired_difference(mine, ref_st["correct"], ref_st["groups"])  # resampling tracks
        out["soundtrack top1_acc (grouped CV)"] = dict(d, seed_diffs=[float(np.mean(cv["correct"]) -
                                                                          np.mean(ref_st["correct"])) for cv in sts])
    tracks = [(e.get("tracks") or {}).get("query_ap") for e in model_entries]
    ref_tr = (ref.get("tracks") or {}).get("query_ap")
    if tracks and all(tracks) and ref_tr and all(len(a) == len(ref_tr) for a in tracks):
        a = np.array([[np.nan if v is None else v for v in ap] for ap in tracks], dtype=np.float64)
        r = np.array([np.nan if v is None else v for v in ref_tr], dtype=np.float64)
        ok = ~np.isnan(r) & ~np.isnan(a).any(0)
        d = paired_difference(a[:, ok].mean(0), r[ok], np.asarray(ref["tracks"]["query_works"])[ok])
        out["same-track MAP"] = dict(d, seed_diffs=[float(x[ok].mean() - r[ok].mean()) for x in a])
    pls = [e.get("playlists") for e in model_entries]
    ref_pl = ref.get("playlists")
    if pls and all(pls) and ref_pl and all((p["item_playlist"], p["item_track"]) ==
                                           (ref_pl["item_playlist"], ref_pl["item_track"]) for p in pls):
        for metric, key in (("playlist HR@10", "item_hit"), ("playlist MPR (lower better)", "item_percentile")):
            mine = np.mean([p[key] for p in pls], axis=0)  # the same held-out tracks against the same negatives
            d = paired_difference(mine, ref_pl[key], ref_pl["item_playlist"])
            out[metric] = dict(d, seed_diffs=[float(np.mean(p[key]) - np.mean(ref_pl[key])) for p in pls])
    return out


def paired_comparisons(entries: List[Dict], models=("mart", "pemr", "simclr")) -> List[Dict]:
    """Each pretrained model (all its seeds) against its random-init encoder, MFCC and chroma: the mean
    paired difference with a 95% bootstrap interval over works, and the per-seed differences."""
    out = []
    for m in models:
        mine = [e for e in entries if e["row"] == m]
        if not mine:
            continue
        for ref_row in (random_row(m), MFCC_ROW, CHROMA_ROW, MUSICNN_ROW):
            ref = next((e for e in entries if e["row"] == ref_row), None)
            if ref is None:
                continue
            for metric, d in paired_metrics(mine, ref).items():
                spread = float(np.std(d["seed_diffs"], ddof=1)) if len(d["seed_diffs"]) > 1 else 0.0
                ci = "ci_low" in d
                out.append(dict(d, model=m, reference=ref_row, metric=metric, seed_spread=spread,
                                separated=bool(ci and (d["ci_low"] > 0 or d["ci_high"] < 0)
                                               and abs(d["diff"]) > spread)))
    return out


# the lead table: one score per task, each with a 95% interval over its independent units
SUMMARY = [("style", "style top1_acc (CV)"), ("soundtrack", "soundtrack top1_acc (CV)"),
           ("tracks", "same-track MAP"), ("covers", "cover MAP"), ("playlists", "playlist HR@10")]


def item_scores(mine: List[Dict], task: str):
    """Per-item scores of one row (its seeds averaged item by item) and the units they group into, or None:
    clip correctness by work/track (style, soundtrack), query AP by work/track (covers, same-track),
    held-out hits by playlist (``playlists``) or their percentile ranks (``mpr``)."""
    if task in ("style", "soundtrack"):
        cvs = [(e.get(task) or {}).get("cv") for e in mine]
        if not cvs or not all(cvs) or any(cv["names"] != cvs[0]["names"] for cv in cvs):
            return None
        return np.mean([cv["correct"] for cv in cvs], axis=0), np.asarray(cvs[0]["groups"])
    if task in ("covers", "tracks"):
        aps = [(e.get(task) or {}).get("query_ap") for e in mine]
        if not aps or not all(aps) or any(len(a) != len(aps[0]) for a in aps):
            return None
        a = np.array([[np.nan if v is None else v for v in ap] for ap in aps], dtype=np.float64).mean(0)
        ok = ~np.isnan(a)
        return a[ok], np.asarray(mine[0][task]["query_works"])[ok]
    pls = [e.get("playlists") for e in mine]
    if not pls or not all(pls) or any(p["item_playlist"] != pls[0]["item_playlist"] for p in pls):
        return None
    key = "item_percentile" if task == "mpr" else "item_hit"
    if any(key not in p for p in pls):
        return None
    return np.mean([p[key] for p in pls], axis=0), np.asarray(pls[0]["item_playlist"])


def summary(entries: List[Dict]) -> List[Dict]:
    """Rows of the lead table: per row and task the mean score with a 95% bootstrap interval."""
    out = []
    for name in dict.fromkeys(e["row"] for e in entries):
        mine = [e for e in entries if e["row"] == name]
        cells = {}
        for task, label in SUMMARY:
            got = item_scores(mine, task)
            if got is not None and len(got[0]):
                cells[label] = grouped_bootstrap(got[0], got[1])
        out.append({"row": name, "seeds": len([e for e in mine if e.get("seed") is not None]), "cells": cells})
    return out


def _summary_table(rows: List[Dict]) -> List[str]:
    labels = [lab for _, lab in SUMMARY if any(lab in r["cells"] for r in rows)]
    lines = ["| model | seeds | " + " | ".join(labels) + " |", "|---|---:|" + "---|" * len(labels)]
    for r in rows:
        cells = [f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if (c := r["cells"].get(lab)) else "–"
                 for lab in labels]
        lines.append(f"| {r['row']} | {r['seeds'] or '–'} | " + " | ".join(cells) + " |")
    return lines


def task_verdict(result: Dict) -> List[str]:
    """A few lines: on which task each pretrained model is separated from its random init, from MFCC and
    from MusiCNN (better or worse), and where it is not."""
    lines = []
    by_model: Dict[str, List[Dict]] = {}
    for c in result.get("paired", []):
        if "ci_low" in c and c["reference"] in (random_row(c["model"]), MFCC_ROW, MUSICNN_ROW):
            by_model.setdefault(c["model"], []).append(c)
    for m, comps in by_model.items():
        parts = []
        for ref, name in ((random_row(m), "its random init"), (MFCC_ROW, "MFCC"), (MUSICNN_ROW, "MusiCNN")):
            mine = [c for c in comps if c["reference"] == ref]
            better = [f"{c['metric'].split(' (')[0]} ({c['diff']:+.3f})" for c in mine
                      if c["separated"] and _direction(c) == "better"]
            worse = [f"{c['metric'].split(' (')[0]} ({c['diff']:+.3f})" for c in mine
                     if c["separated"] and _direction(c) == "worse"]
            unsure = [c["metric"].split(" (")[0] for c in mine if not c["separated"]]
            if not mine:
                continue
            text = f"against {name}: better on {', '.join(better) or 'nothing'}"
            text += f"; worse on {', '.join(worse)}" if worse else ""
            text += f"; not separated on {', '.join(unsure)}" if unsure else ""
            parts.append(text)
        lines.append(f"- **{m}** " + ". ".join(parts) + ".")
    if not lines:
        return []
    return (["", "Verdict (paired differences on the same items; separated = 95% interval excludes 0 and the "
             "difference exceeds the spread over seeds):", ""] + lines)


def verdict(result: Dict) -> List[str]:
    """Plain sentences: do the references separate from chance, do the pretrained models separate from
    their random init (and if not, why this table cannot show it)."""
    lines = []
    entries = result.get("entries", [])
    for e in entries:
        cv = (e.get("style") or {}).get("cv")
        if e["row"] in (MFCC_ROW, CHROMA_ROW) and cv:
            labels = {n.split(".")[0] for n in cv["names"]}
            chance = 1.0 / len(labels)
            acc = np.asarray(cv["correct"], dtype=np.float64)
            d = paired_difference(acc, np.full_like(acc, chance), cv["groups"])
            where = ("above chance" if d["ci_low"] > 0 else "not separated from chance")
            lines.append(f"- {e['row']}: style top1_acc {d['diff'] + chance:.3f} (chance {chance:.3f}, 95% interval "
                         f"{d['ci_low'] + chance:.3f}-{d['ci_high'] + chance:.3f}): {where}.")
    runs: Dict[str, Dict] = {}
    for r in result.get("runs", []):
        runs.setdefault(r["model"], {"steps": set(), "batch_size": r.get("batch_size", "?")})["steps"].add(r.get("steps"))
    for c in result.get("paired", []):
        if c["reference"] != random_row(c["model"]) or "ci_low" not in c:
            continue
        state = f"{_direction(c)} than" if c["separated"] else "not separated from"
        r = runs.get(c["model"], {"steps": set(), "batch_size": "?"})
        steps = sorted(x for x in r["steps"] if x is not None)
        steps_text = "?" if not steps else str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
        lines.append(f"- {c['model']} ({steps_text} steps of batch {r['batch_size']}): {c['metric']} "
                     f"{state} its random init ({c['diff']:+.3f}).")
    if any("not separated from its random init" in x for x in lines):
        lines.append("- 'Not separated' means this measurement cannot show that pretraining changed the encoder "
                     "at this budget (the papers train for about 10^5 steps of batch 48); docs/offline_bench.md "
                     "has longer GPU runs evaluated the same way.")
    return ["", "What this table can tell:", ""] + lines if lines else []


def _direction(c: Dict) -> str:
    """"better" or "worse": the sign of a paired difference read with the metric's direction."""
    lower_better = c["metric"] in LOWER_IS_BETTER_LABELS
    return "better" if (c["diff"] < 0 if lower_better else c["diff"] > 0) else "worse"


def _paired_table(comps: List[Dict]) -> List[str]:
    lines = ["| model | against | metric | difference [95% CI over works] | per seed | separated |",
             "|---|---|---|---|---|---|"]
    for c in comps:
        ci = f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if "ci_low" in c else ""
        seeds = ", ".join(f"{x:+.3f}" for x in c["seed_diffs"])
        side = "above" if c["diff"] > 0 else "below"
        separated = (f"yes, {side} ({_direction(c)})" if c["separated"] else "no") if ci else "–"
        lines.append(f"| {c['model']} | {c['reference']} | {c['metric']} | {c['diff']:+.3f}{ci} | {seeds} | {separated} |")
    return lines


def _comparison_table(comps: List[Dict]) -> List[str]:
    pairs = list(dict.fromkeys((c["model"], c["reference"]) for c in comps))
    metrics = list(dict.fromkeys(c["metric"] for c in comps))
    lines = ["| model | against | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for m, ref in pairs:
        cells = []
        for metric in metrics:
            c = next((c for c in comps if (c["model"], c["reference"], c["metric"]) == (m, ref, metric)), None)
            cells.append("–" if c is None else
                         f"{'better' if c['better'] else '**not better**'} ({c['model_mean'] - c['reference_mean']:+.3f})")
        lines.append(f"| {m} | {ref} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: Dict) -> str:
    rows, meta = result["table"], result["meta"]
    cols = columns(rows)
    lead = summary(result.get("entries", []))
    lines = ["## mart-bench run", ""]
    if lead and any(r["cells"] for r in lead):
        units = ["works"] + (["tracks"] if any("soundtrack top1_acc (CV)" in r["cells"] for r in lead) else []) + (
            ["playlists"] if any("playlist HR@10" in r["cells"] for r in lead) else [])
        lines += [f"Scores with 95% intervals (bootstrap over {', '.join(units)}; a model's seeds averaged item "
                  "by item). CV: linear probe under cross-validation grouped by work (style)"
                  + (" or track (soundtrack)" if "tracks" in units else "") + " over all clips. Chart: results.png.",
                  ""] + _summary_table(lead)
        lines += task_verdict(result)
        lines += ["", "### Details", ""]
    lines += [
             f"Data: {meta['data']}. Pretraining budget per run: {meta['budget']}; seeds {meta['seeds']}. "
             + (f"Positive pairs by the {meta['strategy']} strategy (strategies paper Table 1). "
                if meta.get("strategy") else "")
             + f"Classification: heareval embeddings + predictions runners (grid {meta['grid']}, "
             f"{meta['grid_points']} points), test split. Covers: {meta['cover_tracks']} versions of "
             f"{meta['cover_works']} works, each a query against all others."
             + (f" Playlists: {meta['playlists']}." if meta.get("playlists") else "")
             + (f" Recordings: {meta['recordings']}." if meta.get("recordings") else "")
             + f" Total {meta['total_minutes']:.1f} min.",
             "", "heareval probe (test split) and the other metrics, mean ± std over seeds:",
             "", "| model | seeds | " + " | ".join(HEADERS[c] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        cells = [_cell(r.get(f"{t}_{m}")) for t, m in cols]
        lines.append(f"| {r['row']} | {len(r['seeds']) or '–'} | " + " | ".join(cells) + " |")
    runs = result.get("runs", [])
    if runs:
        lines += ["", "Pretraining runs:", "", "| model | seed | steps | batch | training min | wall s |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['seed']} | {r['steps']} | {r['batch_size']} | {r['train_minutes']:.2f} | "
                  f"{r['wall_s']:.0f} |" for r in runs]
    pcomps = result.get("paired", [])
    if pcomps:
        lines += ["", "Paired differences on the same data (style: out-of-fold correctness of a linear probe, "
                  "5-fold cross-validation grouped by work over all clips, 3 repeats; covers: average precision "
                  "per query; playlists: hit and percentile rank of each held-out track). The model's seeds are "
                  "averaged item by item; the interval resamples works (playlists for the playlist metrics). "
                  "'separated': the interval excludes 0 and the difference exceeds the spread over seeds.", ""]
        lines += _paired_table(pcomps)
        lines += verdict(result)
    if result.get("curve"):
        from .curve import markdown as curve_markdown, trend_markdown

        lines += curve_markdown(result["curve"]) + trend_markdown(result.get("curve_trend", []))
    comps = result.get("comparisons", [])
    if comps:
        names = ", ".join(dict.fromkeys(c["model"] for c in comps))
        lines += ["", f"{names} (mean over seeds) against the references: {sum(c['better'] for c in comps)} of "
                  f"{len(comps)} comparisons better (difference of means in brackets).", ""]
        lines += _comparison_table(comps)
    return "\n".join(lines) + "\n"


def plot(result: Dict, path: str) -> None:
    """The lead table as a chart: one panel per task, each row's mean with its 95% interval (without
    per-item scores: the heareval test scores, mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lead = summary(result.get("entries", []))
    labels = [lab for _, lab in SUMMARY if any(lab in r["cells"] for r in lead)]
    if labels:
        names = [r["row"] for r in lead]
        panels = [(lab, [r["cells"].get(lab) for r in lead]) for lab in labels]
        seeded = [bool(r["seeds"]) for r in lead]
        title = "mart-bench run: pretrained (blue) and references (grey), 95% intervals"
    else:
        rows = result["table"]
        names = [r["row"] for r in rows]
        seeded = [bool(r["seeds"]) for r in rows]
        panels = []
        for task, metric in (("style", "top1_acc"), ("covers", "map")):
            stats = [r.get(f"{task}_{metric}") for r in rows]
            panels.append((HEADERS[(task, metric)] + " (test)",
                           [None if st is None else {"mean": st["mean"], "ci_low": st["mean"] - st["std"],
                                                     "ci_high": st["mean"] + st["std"]} for st in stats]))
        title = "mart-bench run: pretrained (blue, mean ± std over seeds) and references (grey)"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2, 0.45 * len(names) + 1.6), squeeze=False)
    y = np.arange(len(names))[::-1]
    for ax, (label, cells) in zip(axes[0], panels):
        means = np.array([c["mean"] if c else np.nan for c in cells])
        lo = np.array([c["mean"] - c["ci_low"] if c else 0.0 for c in cells])
        hi = np.array([c["ci_high"] - c["mean"] if c else 0.0 for c in cells])
        ax.barh(y, np.nan_to_num(means), xerr=[lo, hi], color=["C0" if s else "C7" for s in seeded], capsize=3)
        ax.set_yticks(y, names if ax is axes[0][0] else [""] * len(names))
        ax.set_xlabel(label)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
