"""Packaged checkpoints: the best seed of each pretrained model, small, with a model card beside it.

The seed is chosen on the classification task's validation score (never on test). The exported file
is a normal checkpoint (``mart_upstream.checkpoint``) without optimizer state, its weights stored as
float16 (loaded back into float32 parameters), so ``load_model("")``, ``-u mart`` and the cover-song
tool read it like any other.
"""
from __future__ import annotations

import os
import subprocess
from typing import Dict, List

from mart_upstream.checkpoint import compact, read_checkpoint, write_state
from mart_upstream.fileio import write_text


def commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def best_seeds(entries: List[Dict], runs: List[Dict]) -> Dict[str, Dict]:
    """model -> the run whose entry has the highest style validation score (ties: lowest seed)."""
    by_key = {e["key"]: e for e in entries}
    best: Dict[str, Dict] = {}
    for run in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        e = by_key.get(f"{run['model']}-seed{run['seed']}")
        if e is None or "style" not in e:
            continue
        score = e["style"]["validation_score"]
        if run["model"] not in best or score > best[run["model"]]["_score"]:
            best[run["model"]] = dict(run, _score=score, entry=e)
    return best


def export(best: Dict[str, Dict], out_dir: str, meta: Dict) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for model, run in sorted(best.items()):
        state = compact(read_checkpoint(run["checkpoint"]))
        card = {"model": model, "seed": run["seed"], "steps": run["steps"], "batch_size": run["batch_size"],
                "train_minutes": run["train_minutes"], "budget": run["budget"],
                "data": run.get("train_data") or meta["data"], "commit": run.get("commit", meta["commit"]),
                "config": run.get("config", f"mart_upstream/configs/{model}_cpu.yaml"),
                "selected_by": run.get("selected_by", "style validation score"),
                "trained_by": run.get("trained_by", "`mart-bench run`"),
                "device": run.get("device") or meta.get("device") or "cpu", "gpu": run.get("gpu"),
                "throughput": run.get("throughput"),
                "scores": _summary(run["entry"]), "random_init_scores": _summary(run.get("random_init") or {}),
                "paired_with_random_init": _paired_summary(run["entry"], run.get("random_init")),
                "paired_with_references": {row: _paired_summary(run["entry"], ref)
                                           for row, ref in (run.get("references") or {}).items() if ref}}
        state["pretrain"]["model_card"] = card
        path = os.path.join(out_dir, f"{model}.ckpt")
        write_state(path, state)
        write_text(os.path.join(out_dir, f"{model}.md"), model_card(card, os.path.getsize(path)))
        written += [path, os.path.join(out_dir, f"{model}.md")]
    return written


def _summary(entry: Dict) -> Dict:
    """The scores of an evaluated entry without its per-item lists."""
    out = {}
    for task in ("style", "covers", "soundtrack", "tracks"):
        scores = entry.get(task)
        if scores:
            out[task] = {k: v for k, v in scores.items() if isinstance(v, (int, float, str))}
            if isinstance(scores.get("cv"), dict):
                out[task]["cv"] = {k: scores["cv"][k] for k in ("top1_acc", "mAP", "folds", "repeats", "n")}
    return out


def _paired_summary(entry: Dict, random_entry) -> Dict:
    if not random_entry:
        return {}
    from .report import paired_metrics

    return {metric: {k: d[k] for k in ("diff", "ci_low", "ci_high") if k in d}
            for metric, d in paired_metrics([entry], random_entry).items()}


def _paired_text(card: Dict) -> str:
    p = card.get("paired_with_random_init") or {}
    cv = ((card.get("scores") or {}).get("style") or {}).get("cv")
    rcv = ((card.get("random_init_scores") or {}).get("style") or {}).get("cv")
    lines = []
    if cv and rcv:
        lines.append(f"Grouped {cv['folds']}-fold cross-validation over all {cv['n']} style clips ({cv['repeats']} "
                     f"repeats, linear probe): top1_acc {cv['top1_acc']:.3f}, mAP {cv['mAP']:.3f}; random init "
                     f"{rcv['top1_acc']:.3f}, {rcv['mAP']:.3f}.")
    st = (card.get("scores") or {}).get("soundtrack")
    tr = (card.get("scores") or {}).get("tracks")
    if st and tr:
        rst = (card.get("random_init_scores") or {}).get("soundtrack") or {}
        rtr = (card.get("random_init_scores") or {}).get("tracks") or {}
        lines.append(f"Recorded soundtracks: soundtrack identification (grouped CV by track) top1_acc "
                     f"{st['top1_acc']:.3f}, same-track MAP {tr['map']:.3f}"
                     + (f"; random init {rst['top1_acc']:.3f}, {rtr['map']:.3f}." if rst and rtr else "."))
    for against, paired in [("the random init", p)] + sorted((card.get("paired_with_references") or {}).items()):
        for metric, d in paired.items():
            if "ci_low" in d:
                lines.append(f"Paired difference with {against}, {metric}: {d['diff']:+.3f} "
                             f"(95% interval {d['ci_low']:+.3f} to {d['ci_high']:+.3f}).")
    return ("\n" + "\n".join(lines)) if lines else ""


def _against_random(card: Dict) -> str:
    r = card.get("random_init_scores") or {}
    if not r.get("style") or not r.get("covers"):
        return ""
    return (f"\nThe same encoder with random weights scores style top1_acc {r['style']['top1_acc']:.3f}, "
            f"cover MAP {r['covers']['map']:.3f} on the same sets.")


def _where(card: Dict) -> str:
    """The training device as the card states it: CPU, or the GPU's name."""
    device = card.get("device") or "cpu"
    if device == "cpu":
        return "CPU"
    return f"{card['gpu']} ({device})" if card.get("gpu") else "GPU"


def _speed(card: Dict) -> str:
    t = card.get("throughput") or {}
    if not t.get("clips_per_s"):
        return ""
    parts = [f"{t['clips_per_s']:.0f} clips/s"]
    if t.get("step_time_s"):
        parts.append(f"{t['step_time_s']:.3f} s per step")
    if t.get("peak_mem_gb"):
        parts.append(f"peak GPU memory {t['peak_mem_gb']:.1f} GB")
    together = t.get("models_together") or 1
    shared = f"; {together} models trained at once on the same device" if together > 1 else ""
    return f"\n- Speed: {', '.join(parts)}{shared}."


def model_card(card: Dict, size: int) -> str:
    style, cov = card["scores"].get("style") or {}, card["scores"].get("covers") or {}
    file = str(card.get("config") or "").endswith((".yaml", ".yml", ".json"))
    config = (f"config `{card['config']}` (the model section is also inside the checkpoint)" if file
              else f"{card['config']} (the model section is inside the checkpoint)" if card.get("config")
              else "the papers' default config (`mart-pretrain` without `--config`; the model section is also "
                   "inside the checkpoint)")
    chosen = f"\n- Chosen among the benchmark's seeds by the {card['selected_by']}." if card.get("selected_by") else ""
    command = f" --config {card['config']}" if file else ""
    return f"""# {card['model']} (packaged checkpoint)

- Model: `{card['model']}`, {config}.
- Trained by {card.get('trained_by', '`mart-bench run`')} with `mart-pretrain`: seed {card['seed']}, \
{card['steps']} steps of batch
  {card['batch_size']} ({card['train_minutes']:.1f} min of training on {_where(card)}; \
budget {card['budget']}).{_speed(card)}
- Data: {card['data']}.
- Code: commit {card['commit']}.{chosen}
- Stored without optimizer state, weights in float16 ({size / 1e6:.1f} MB); loaded into float32.

Scores on the benchmark's test sets (heareval probe on the style task; cover-song retrieval):
style top1_acc {style.get('top1_acc', float('nan')):.3f}, style mAP {style.get('mAP', float('nan')):.3f},
cover MAP {cov.get('map', float('nan')):.3f}, P@10 {cov.get('p_at_10', float('nan')):.3f},
MR1 {cov.get('mr1', float('nan')):.1f}.{_against_random(card)}
{_paired_text(card)}

This is a small model trained briefly (the steps and data above): a working default
for the harness adapters and a starting point, not a replacement for pretraining on your catalogue
(`mart-pretrain --model {card['model']} --data DIR{command}`).
"""
