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

import torch

from mart_upstream.checkpoint import read_checkpoint
from mart_upstream.fileio import atomic_path, write_text


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
        state = read_checkpoint(run["checkpoint"])
        state["optimizer"] = None
        state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
        card = {"model": model, "seed": run["seed"], "steps": run["steps"], "batch_size": run["batch_size"],
                "train_minutes": run["train_minutes"], "budget": run["budget"], "data": meta["data"],
                "commit": run.get("commit", meta["commit"]), "config": f"benchmarks/offline/configs/{model}.yaml",
                "selected_by": "style validation score", "scores": {k: run["entry"].get(k) for k in ("style", "covers")},
                "random_init_scores": {k: (run.get("random_init") or {}).get(k) for k in ("style", "covers")}}
        state["pretrain"]["model_card"] = card
        path = os.path.join(out_dir, f"{model}.ckpt")
        with atomic_path(path, suffix=".ckpt", fsync=True) as tmp:
            torch.save(state, tmp)
        write_text(os.path.join(out_dir, f"{model}.md"), model_card(card, os.path.getsize(path)))
        written += [path, os.path.join(out_dir, f"{model}.md")]
    return written


def _against_random(card: Dict) -> str:
    r = card.get("random_init_scores") or {}
    if not r.get("style") or not r.get("covers"):
        return ""
    return (f"\nThe same encoder with random weights scores style top1_acc {r['style']['top1_acc']:.3f}, "
            f"cover MAP {r['covers']['map']:.3f} on the same sets.")


def model_card(card: Dict, size: int) -> str:
    style, cov = card["scores"].get("style") or {}, card["scores"].get("covers") or {}
    return f"""# {card['model']} (packaged checkpoint)

- Model: `{card['model']}`, config `{card['config']}` (the model section is also inside the checkpoint).
- Trained by `mart-bench run` with `mart-pretrain`: seed {card['seed']}, {card['steps']} steps of batch
  {card['batch_size']} ({card['train_minutes']:.1f} min of training on CPU; budget {card['budget']}).
- Data: {card['data']}.
- Code: commit {card['commit']}.
- Chosen among the benchmark's seeds by the {card['selected_by']}.
- Stored without optimizer state, weights in float16 ({size / 1e6:.1f} MB); loaded into float32.

Scores on the benchmark's test sets (heareval probe on the style task; cover-song retrieval):
style top1_acc {style.get('top1_acc', float('nan')):.3f}, style mAP {style.get('mAP', float('nan')):.3f},
cover MAP {cov.get('map', float('nan')):.3f}, P@10 {cov.get('p_at_10', float('nan')):.3f},
MR1 {cov.get('mr1', float('nan')):.1f}.{_against_random(card)}

This is a small model trained briefly on rendered scores and a few recordings: a working default
for the harness adapters and a starting point, not a replacement for pretraining on your catalogue
(`mart-pretrain --model {card['model']} --data DIR --config {card['config']}`).
"""
