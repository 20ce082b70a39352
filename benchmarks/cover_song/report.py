"""Outputs of a cover-song run: a Markdown table, JSON files and a plot, all written atomically."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

from mart_upstream.fileio import atomic_path, write_json, write_text

COLUMNS = [("map", "MAP", "{:.3f}"), ("p_at_10", "P@10", "{:.3f}"), ("mr1", "MR1", "{:.2f}"),
           ("top1", "top-1", "{:.3f}"), ("n_queries", "queries", "{}")]


def table(rows: Dict[str, Dict]) -> str:
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " | search |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, r in rows.items():
        cells = [fmt.format(r[k]) for k, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('search', '')} |")
    return "\n".join(lines)


def plot_ranks(path: str, ranks: Dict[str, Sequence[int]], title: str = "") -> None:
    """Per model: the rank of the first correct answer of every query, sorted (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, r in ranks.items():
        ax.step(range(1, len(r) + 1), sorted(r), where="post", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("query (sorted)")
    ax.set_ylabel("rank of first correct version")
    ax.set_title(title or "cover-song retrieval")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def save_run(out_dir: str, results: Dict[str, Dict], meta: Dict) -> List[str]:
    """-> the files written: <out>/<model>/results.json, <out>/summary.{json,md}, <out>/ranks.png."""
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for name, r in results.items():
        p = os.path.join(out_dir, _safe(name), "results.json")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        write_json(p, {**r, **meta.get(name, {})})
        files.append(p)
    summary = {n: {k: r[k] for k, _, _ in COLUMNS} | {"search": r.get("search")} for n, r in results.items()}
    write_json(os.path.join(out_dir, "summary.json"), summary)
    write_text(os.path.join(out_dir, "summary.md"), table(results) + "\n")
    plot_ranks(os.path.join(out_dir, "ranks.png"), {n: r["ranks_first"] for n, r in results.items()})
    return files + [os.path.join(out_dir, f) for f in ("summary.json", "summary.md", "ranks.png")]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
