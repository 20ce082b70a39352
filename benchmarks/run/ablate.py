"""``mart-bench ablate``: which augmentations (or settings) help on recorded music? One model, one budget, parts of its chain off.

    mart-bench ablate --data DATA --out OUT [--model mart] [--steps 300] [--seed 0]
                      [--variants chain,no-pitch,no-timbre,crop-only] [--base chain]
                      [--variant NAME=augment.p_gain=0,augment.p_delay=0]   # a variant of your own (repeatable)
                      [--variant NAME=crop-only,model.frame_mask=none]      # ... on top of a built-in one

Every variant is pretrained from the same seed on the same pool (``DATA/pretrain``) for the same
number of steps, with the model's benchmark config, its paper chain set explicitly (the CPU config
of mart trains on crops alone) and the variant's overrides on top, then scored on the
recordings tasks (``DATA/recordings/tracks.csv``): soundtrack identification (grouped CV by track) and
same-track retrieval. The same encoder with random weights, MFCC statistics and MusiCNN are scored
in the same run. Each variant is compared item by item with the base variant (``--base``: the full chain
unless it names another; only the base and the listed variants are trained), with random init and with
MFCC (mean difference, 95% bootstrap interval over tracks). A variant of
one's own may also set the model's or the optimizer's settings (``model.*``, ``optim.*``), so the same
command measures, at one budget, what a loss setting does on top of crops alone. The tasks' labels depend on
instrumentation and production; the chain's filters, gain, delay and pitch shift teach invariance to
exactly those, which is the question this command measures (docs/offline_bench.md). Every variant
is trained here, by this code, so the chain and its ablations differ in nothing else. Everything
finished is kept in OUT; a killed run continues.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from typing import Dict, List, Tuple

import numpy as np

from mart_upstream.argtypes import comma_list
from mart_upstream.augment import AugmentConfig
from mart_upstream.errors import UsageError
from mart_upstream.fileio import write_json, write_text

from . import evaluation, model_cards, pretraining, report
from .evaluation import Entry
from .paired import paired_difference

log = logging.getLogger("mart-bench.ablate")
# every probability of the chain, read from its config (a new augmentation joins crop-only by itself)
_ALL_P = tuple(f.name for f in dataclasses.fields(AugmentConfig) if f.name.startswith("p_"))
# the built-in variants: overrides on top of the model's config (its paper's chain)
VARIANTS: Dict[str, List[str]] = {
    "chain": [],  # the model's paper chain (MART, PEMR, SimCLR: CLMR's), set explicitly whatever the config says
    "no-pitch": ["augment.p_pitch=0"],  # no pitch shift
    "no-timbre": ["augment.p_filter=0", "augment.p_gain=0", "augment.p_delay=0"],  # production kept as recorded
    "no-pitch-timbre": ["augment.p_pitch=0", "augment.p_filter=0", "augment.p_gain=0", "augment.p_delay=0"],
    "crop-only": [f"augment.{p}=0" for p in _ALL_P],  # two crops of a track, nothing else
}
DEFAULT_VARIANTS = "chain,no-pitch,no-timbre,crop-only"
BASE = "chain"  # what every variant is compared with, unless --base names another
# what a variant may set: the chain, and the model's and optimizer's settings (never the budget: run.*)
VARIABLE = ("augment.", "model.", "optim.")
TASKS = (("soundtrack", "soundtrack top1_acc (CV)"), ("tracks", "same-track MAP"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a data folder built by `mart-bench data` (DATA/pretrain, "
                                                  "DATA/recordings/tracks.csv)")
    p.add_argument("--out", required=True, help="results folder (ablate.json, ablate.md)")
    p.add_argument("--model", default="mart", choices=pretraining.MODELS)
    p.add_argument("--steps", type=int, default=300, help="steps per variant (default 300)")
    p.add_argument("--batch-size", type=int, help="override the config's batch size (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, from {', '.join(VARIANTS)} (default {DEFAULT_VARIANTS}); "
                        "the base (--base) is always included")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                   help="a variant of your own: a name and comma-separated mart-pretrain overrides (augment.*, "
                        "model.*, optim.*); a built-in variant's name in the list adds its overrides")
    p.add_argument("--base", default=BASE, help=f"the variant every other is compared with (default {BASE}); "
                                                "built in or defined with --variant, always trained")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a mart-pretrain override for every variant, e.g. run.bf16_cpu=false on shared cores "
                        "(repeatable; not the budget: use --steps and --batch-size)")
    p.add_argument("--no-musicnn", action="store_true", help="leave out the MusiCNN reference")


def parse_variants(names: str, custom: List[str], base: str = BASE) -> Dict[str, List[str]]:
    """``--variants``, ``--variant`` and ``--base`` -> {name: overrides}, the base first."""
    out: Dict[str, List[str]] = {}
    for name in comma_list(names):
        if name not in VARIANTS:
            raise UsageError(f"--variants: unknown {name!r}; choose from {', '.join(VARIANTS)} or define one with --variant")
        out[name] = VARIANTS[name]
    for spec in custom:
        name, sep, rest = spec.partition("=")
        name = name.strip()
        items = comma_list(rest)
        if not sep or not name or not items:
            raise UsageError(f"--variant {spec!r}: expected NAME=key=value[,key=value...]")
        overrides: List[str] = []
        for item in items:
            if "=" in item:
                overrides.append(item)
            elif item in VARIANTS:
                overrides += VARIANTS[item]
            else:
                raise UsageError(f"--variant {spec!r}: {item!r} is neither key=value nor a built-in variant "
                                 f"({', '.join(VARIANTS)})")
        bad = [o for o in overrides if not o.startswith(VARIABLE)]
        if bad:
            raise UsageError(f"--variant {spec!r}: {bad[0].split('=')[0]} is not a setting a variant may change "
                             f"(only {', '.join(v + '*' for v in VARIABLE)}; the budget stays the same)")
        if name in out or name in VARIANTS:
            raise UsageError(f"--variant {spec!r}: the name {name!r} is taken")
        out[name] = overrides
    if base not in out:
        if base not in VARIANTS:
            raise UsageError(f"--base: unknown {base!r}; choose from {', '.join(VARIANTS)} or a --variant name")
        out[base] = VARIANTS[base]
    return {base: out[base], **{n: o for n, o in out.items() if n != base}}


def common_settings(settings: List[str]) -> List[str]:
    """``--set`` values, checked as ``mart-bench run`` checks them, and never the budget every variant shares."""
    for o in pretraining.checked_settings(settings):
        if o.split("=", 1)[0].strip() in ("run.steps", "run.batch_size", "run.max_minutes"):
            raise UsageError(f"--set {o!r}: the budget is --steps and --batch-size, the same for every variant")
    return list(settings)


def _settings(overrides: List[str]) -> Dict:
    """The values a variant sets (for the report): augment.* by their short name, the others in full."""
    out = {}
    for o in overrides:
        key, value = o.split("=", 1)
        out[key[len("augment."):] if key.startswith("augment.") else key] = value
    return out


def paper_chain(model: str) -> Dict:
    """The probabilities of the model's paper chain: the chain's defaults with the model's own changes (what
    ``mart-pretrain --model M`` trains with), whatever the benchmark config sets."""
    from mart_upstream.models import get_entry

    base = dataclasses.asdict(AugmentConfig())
    base.update((get_entry(model).model_cls.pretrain_defaults or {}).get("augment") or {})
    return {k: v for k, v in base.items() if k in _ALL_P}


def compare(mine: Dict, ref: Dict) -> Dict[str, Dict]:
    """Item-by-item differences of two entries on the recordings tasks (the same clips, the same folds)."""
    out = {}
    for task, label in TASKS:
        a, b = report.item_scores([mine], task), report.item_scores([ref], task)
        if a is None or b is None:
            continue
        if len(a[1]) != len(b[1]) or not np.array_equal(a[1], b[1]):
            raise UsageError(f"{mine['key']} and {ref['key']} were scored on different clips; remove {ref['key']}'s "
                             "results and run again")
        out[label] = paired_difference(a[0], b[0], a[1])
    return out


def _cell(d: Dict) -> str:
    mark = "+" if d["ci_low"] > 0 else ("−" if d["ci_high"] < 0 else "")
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{mark}"


def markdown(result: Dict) -> str:
    m = result["meta"]
    lines = [f"# Ablation: {m['model']}, {m['steps']} steps of batch {m['batch_size']}, seed {m['seed']}",
             "", f"Pool: {m['pool']}. Recordings: {m['recordings']}."
             + (f" Every variant with {' '.join(m['settings'])}." if m.get("settings") else ""), "",
             "## Scores (95% interval over tracks)", "",
             "| row | settings | " + " | ".join(lab for _, lab in TASKS) + " |",
             "|---|---|" + "---|" * len(TASKS)]
    for r in result["summary"]:
        cells = [f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if (c := r["cells"].get(lab)) else "–"
                 for _, lab in TASKS]
        lines.append(f"| {r['row']} | {r.get('off', '')} | " + " | ".join(cells) + " |")
    for ref in (m.get("base", BASE), "random init", "MFCC", "MusiCNN"):
        if not any(ref in v["vs"] for v in result["variants"]):
            continue
        lines += ["", f"## Each variant minus {ref} (paired; + / − where the interval excludes 0)", "",
                  "| variant | " + " | ".join(lab for _, lab in TASKS) + " |", "|---|" + "---|" * len(TASKS)]
        for v in result["variants"]:
            comp = v["vs"].get(ref)
            if comp is None:
                continue
            lines.append(f"| {v['name']} | " + " | ".join(_cell(comp[lab]) if lab in comp else "–" for _, lab in TASKS)
                         + " |")
    lines += ["", f"Total {m['total_minutes']:.1f} min on {m['machine']}; code {m['commit']}.", ""]
    return "\n".join(lines)


def _entries(args, variants: Dict[str, List[str]], data: Dict) -> Tuple[List[Entry], Dict]:
    budget = pretraining.Budget(None, args.steps, args.batch_size)
    runs, entries = {}, []
    for name, overrides in variants.items():
        chain = [f"augment.{k}={v}" for k, v in data["chain"].items()]  # the paper's chain, then the variant's changes
        runs[name] = pretraining.pretrain(args.model, args.seed, data["pretrain"], os.path.join(args.out, "pretrain", name),
                                          budget, overrides=chain + data["settings"] + overrides, commit=data["commit"])
        entries.append(Entry(f"{args.model} [{name}]", f"variant-{name}", f"hear_api.{args.model}",
                             runs[name]["checkpoint"], args.seed))
    rnd = pretraining.random_init(args.model, args.seed, os.path.join(args.out, "random_init", f"{args.model}.ckpt"))
    entries.append(Entry(report.random_row(args.model), f"{args.model}-random", f"hear_api.{args.model}", rnd, None))
    from .run import REFERENCES

    entries += [e for e in REFERENCES if e.row == report.MFCC_ROW or (e.row == report.MUSICNN_ROW and not args.no_musicnn)]
    return entries, runs


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    variants = parse_variants(args.variants, args.variant, args.base)
    settings = common_settings(args.settings)
    if args.steps < 1:
        raise UsageError("--steps must be at least 1")
    base_augment = paper_chain(args.model)
    manifest = os.path.join(args.data, "recordings", "tracks.csv")
    pool = os.path.join(args.data, "pretrain")
    for what, path, ok in (("recordings manifest", manifest, os.path.isfile), ("pretraining folder", pool, os.path.isdir)):
        if not ok(path):
            raise UsageError(f"{what} {path} does not exist (build the data with `mart-bench data --profile multi`)")
    data = {"pretrain": pool, "commit": model_cards.commit(), "chain": base_augment, "settings": settings}
    entries, runs = _entries(args, variants, data)
    scored = []
    for e in entries:
        log.info("evaluating %s", e.key)
        folder = os.path.join(args.out, "eval", e.key)
        evaluation.bind(e, folder, {})  # the manifest is checked by evaluation.recordings itself
        rec = evaluation.recordings(e, manifest, folder)
        scored.append({"row": e.row, "key": e.key, "seed": e.seed, "checkpoint": e.checkpoint,
                       "soundtrack": rec["soundtrack"], "tracks": rec["tracks"]})
        log.info("%s: soundtrack top1_acc %.3f; same-track MAP %.3f", e.key, rec["soundtrack"]["top1_acc"],
                 rec["tracks"]["map"])
    by_key = {s["key"]: s for s in scored}
    refs = {args.base: by_key[f"variant-{args.base}"], "random init": by_key[f"{args.model}-random"],
            "MFCC": next(s for s in scored if s["row"] == report.MFCC_ROW)}
    musicnn = next((s for s in scored if s["row"] == report.MUSICNN_ROW), None)
    if musicnn:
        refs["MusiCNN"] = musicnn
    out_variants = []
    for name, overrides in variants.items():
        mine = by_key[f"variant-{name}"]
        out_variants.append({"name": name, "overrides": overrides, "settings": _settings(overrides),
                             "run": runs[name],
                             "vs": {ref: compare(mine, other) for ref, other in refs.items() if other is not mine}})
    summary = report.summary(scored)
    offs = {f"{args.model} [{n}]": ", ".join(f"{k}={v}" for k, v in _settings(o).items()) or "the paper's chain"
            for n, o in variants.items()}
    for r in summary:
        r["off"] = offs.get(r["row"], "")
    import platform

    meta = {"model": args.model, "steps": args.steps, "seed": args.seed, "base": args.base,
            "batch_size": args.batch_size or pretraining.Budget().batch_of(args.model),
            "pool": os.path.abspath(pool), "recordings": os.path.abspath(manifest), "chain": base_augment,
            "settings": settings,
            "commit": data["commit"], "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "total_minutes": (time.time() - t0) / 60}
    result = {"meta": meta, "summary": summary, "variants": out_variants, "entries": scored}
    write_json(os.path.join(args.out, "ablate.json"), result, sort_keys=False)
    text = markdown(result)
    write_text(os.path.join(args.out, "ablate.md"), text)
    print(text)
    return 0
