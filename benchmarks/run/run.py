"""``mart-bench run``: pretrain mart, pemr and simclr for the same budget, evaluate them and the references.

    mart-bench run --out results/bench                       # builds the full data set into OUT/data
    mart-bench run --out results/quick --quick               # small data, short runs: the README demo
    mart-bench run --out OUT --data DIR [--task NAME]        # a set built elsewhere: DIR/tasks/<task>/,
                                                             # DIR/covers/manifest.csv, DIR/pretrain/,
                                                             # DIR/playlists.jsonl, DIR/recordings/tracks.csv
                                                             # (when there)
    mart-bench run --out OUT --export mart_upstream/checkpoints   # also package the best seeds
    mart-bench run --out OUT --checkpoints RUN [--export DIR]     # evaluate checkpoints trained elsewhere
                                                             # (RUN/<model>.ckpt, e.g. from a GPU run)

Rows: each pretrained model (mean ± std over ``--seeds``), the same models with random weights, MFCC
statistics and chroma statistics (key-invariant on covers). Playlist continuation (HR@10, MPR) is
scored when the data has a playlist file, with the style task's embeddings; soundtrack identification
and same-track retrieval on recorded music when the data has ``recordings/tracks.csv``. Everything finished is kept in OUT, so a
killed run continues where it stopped when started again with the same arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Dict, List

from mart_upstream.argtypes import comma_list
from mart_upstream.distributed import require_cuda
from mart_upstream.errors import UsageError
from mart_upstream.models.siamese import STRATEGIES
from mart_upstream.fileio import sha256_file, write_json, write_text
from mart_upstream.tasks.playlists import PLAYLIST_FILES

from . import curve, evaluation, model_cards, pretraining, report, trained_elsewhere
from .evaluation import Entry

log = logging.getLogger("mart-bench.run")
STYLE_TASK = "music_style-1.0.0-full"  # the default task when the data holds several
REFERENCES = [Entry(report.MFCC_ROW, "mfcc", "hear_api.mfcc"),
              Entry(report.CHROMA_ROW, "chroma", "hear_api.chroma", key_invariant=True),
              Entry(report.MUSICNN_ROW, "musicnn", "hear_api.musicnn")]  # the musicnn package's own weights
# the "multi" pool renders every pretraining work 3 times: positive pairs cross renderings (docs/offline_bench.md)
DEFAULTS = dict(profile="multi", minutes=None, seeds="0,1,2", grid="default", grid_points=8)
# quick: 8 x 16 style clips of 8 s (enough for grouped cross-validation to tell references from chance)
QUICK = dict(profile="quick", minutes=0.5, seeds="0,1", grid="faster", grid_points=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="results folder (results.json, results.md, results.png)")
    p.add_argument("--data", help="a data folder built by `mart-bench data` or in its layout; default: build "
                                   "one into OUT/data")
    p.add_argument("--task", help="the HEAR task folder name under DATA/tasks (when there are several)")
    p.add_argument("--covers", help="cover manifest CSV (default DATA/covers/manifest.csv)")
    p.add_argument("--pretrain-data", help="pretraining audio folder (default DATA/pretrain)")
    p.add_argument("--playlists", help="playlist file whose track ids are the style task's clip names "
                                       "(default DATA/playlists.jsonl when it exists)")
    p.add_argument("--recordings", help="clips of recorded tracks in the cover-manifest format, work = "
                                        "<game>.<track> (default DATA/recordings/tracks.csv when it exists)")
    p.add_argument("--profile", default=DEFAULTS["profile"], choices=["multi", "full", "quick", "small"],
                   help="data profile when building (default multi)")
    p.add_argument("--quick", action="store_true",
                   help=f"a short end-to-end version: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    p.add_argument("--models", default=",".join(pretraining.DEFAULT_MODELS),
                   help=f"comma-separated, from {','.join(pretraining.MODELS)} (default: "
                        f"{','.join(pretraining.DEFAULT_MODELS)})")
    p.add_argument("--strategy", choices=sorted(STRATEGIES),
                   help="target-instance strategy (strategies paper Table 1) for the models that have one "
                        "(cnn5_infonce, cnn5_multilevel); default: each config's (self_aug)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a mart-pretrain override for every run, e.g. augment.p_pitch=0 (repeatable; recorded in "
                        "the results and the cards; use a new --out when it changes)")
    p.add_argument("--seeds", default=DEFAULTS["seeds"], help="pretraining seeds (default 0,1,2)")
    p.add_argument("--minutes", type=float, default=DEFAULTS["minutes"],
                   help="training minutes per run, the same for every model (an equal-time budget; stops at the "
                        "step budget if sooner). Default: none, the step budget alone")
    p.add_argument("--steps", type=int,
                   help="steps per run for every model (default: each config's run.steps, sized to about 5 min "
                        "of 2 CPU cores per run: mart 300, pemr 90, simclr 300 at batch 32)")
    p.add_argument("--batch-size", type=int, help="override the configs' batch size (32)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="pretraining device")
    p.add_argument("--num-workers", type=int, default=1, help="pretraining data-loading processes")
    p.add_argument("--grid", default=DEFAULTS["grid"], choices=["default", "fast", "faster"], help="heareval probe grid")
    p.add_argument("--grid-points", type=int, default=DEFAULTS["grid_points"], help="heareval grid points")
    p.add_argument("--no-references", action="store_true", help="leave out the random-init, MFCC, chroma and MusiCNN rows")
    p.add_argument("--export", metavar="DIR", help="write the best seed of each model as DIR/<model>.ckpt + card")
    p.add_argument("--checkpoints", metavar="DIR",
                   help="evaluate DIR/*.ckpt (one per model, trained elsewhere, e.g. `mart-bench device-unpack`) "
                        "instead of pretraining; use a new --out")
    p.add_argument("--curve", metavar="STEPS",
                   help="comma-separated steps: keep and evaluate each run's weights there too (a learning curve; "
                        "with --checkpoints, DIR/<model>/step_<N>.ckpt)")
    p.add_argument("--workers", type=int, default=2, help="processes for building the data")


def _apply_quick(args) -> None:
    for k, v in QUICK.items():
        if getattr(args, k) == DEFAULTS[k]:  # explicit flags win over --quick
            setattr(args, k, v)


def _data(args) -> Dict[str, str]:
    root = args.data
    if not root:
        root = os.path.join(args.out, "data")
        if not os.path.isfile(os.path.join(root, "manifest.json")):
            from ..data import build as data_build

            cfg = data_build.PROFILES[args.profile]
            log.info("building the %s data set into %s", args.profile, root)
            data_build.build(root, cfg, 0, args.workers, overwrite=True, profile=args.profile)
    tasks = os.path.join(root, "tasks")
    task = evaluation.find_task(tasks, args.task or (STYLE_TASK if os.path.isdir(os.path.join(tasks, STYLE_TASK))
                                                     else None))
    recorded = args.recordings or os.path.join(root, "recordings", "tracks.csv")
    if args.recordings and not os.path.isfile(recorded):
        raise UsageError(f"recordings manifest {recorded} does not exist")
    covers = args.covers or os.path.join(root, "covers", "manifest.csv")
    pool = args.pretrain_data or os.path.join(root, "pretrain")
    playlists = args.playlists or os.path.join(root, PLAYLIST_FILES[0])
    if args.playlists and not os.path.isfile(playlists):
        raise UsageError(f"playlist file {playlists} does not exist")
    for what, path, isdir in (("cover manifest", covers, False), ("pretraining folder", pool, True)):
        if what == "pretraining folder" and args.checkpoints:
            continue  # nothing is pretrained
        if not (os.path.isdir(path) if isdir else os.path.isfile(path)):
            raise UsageError(f"{what} {path} does not exist")
    desc = f"{os.path.abspath(root)}"
    manifest = os.path.join(root, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            m = json.load(f)
        rec = m.get("recordings") or {}
        desc = (f"`mart-bench data --profile {m.get('profile')} --seed {m.get('seed')}`: "
                f"{m['pretrain'].get('rendered_clips')} rendered clips and "
                f"{len(m['pretrain'].get('recorded_tracks', []))} recordings"
                + (f" ({rec.get('pretrain_hours', 0):.1f} h)" if rec.get("pretrain_hours") else "") + " for pretraining")
    return {"root": os.path.abspath(root), "task": task, "covers": covers, "pretrain": pool, "description": desc,
            "playlists": playlists if os.path.isfile(playlists) else None,
            "recordings": recorded if os.path.isfile(recorded) else None}


def _playlist_text(scores, path) -> str:
    """How the playlist columns were measured, for the report ("" without playlists)."""
    if not scores:
        return ""
    return (f"{scores['n_playlists']} playlists ({os.path.basename(path)}) with {scores['n_query']} query tracks "
            f"each; {scores['n_items']} held-out tracks, each ranked against {scores['negatives']} random tracks "
            f"outside its playlist ({scores['search']})")


def _recordings_text(entry: Dict, path) -> str:
    """How the recordings columns were measured, for the report ("" without recordings)."""
    if not entry.get("soundtrack"):
        return ""
    st, tr = entry["soundtrack"], entry["tracks"]
    return (f"{tr['n_queries']} clips of {tr['tracks']} recorded tracks from {st['games']} games "
            f"({os.path.relpath(path)}): soundtrack = the game, linear probe under {st['cv']['folds']}-fold "
            f"cross-validation grouped by track ({st['cv']['repeats']} repeats; majority share "
            f"{st['chance']:.3f}); same-track retrieval = each clip a query for the other clips of its track")


def _int_list(text: str, what: str) -> List[int]:
    try:
        values = comma_list(text, int)
    except ValueError:
        raise UsageError(f"--{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"--{what} is empty")
    return values


def _entries(args, runs: List[Dict], models: List[str], seed: int) -> List[Entry]:
    out = [Entry(r["model"], f"{r['model']}-seed{r['seed']}", f"hear_api.{r['model']}", r["checkpoint"], r["seed"])
           for r in runs]
    if not args.no_references:
        done = set()
        for m in models:
            row = report.random_row(m)  # pemr and simclr share the FCN-4 encoder: one row for both
            if row in done:
                continue
            done.add(row)
            if args.checkpoints:  # the checkpoint's own model config and seed
                own = next(r for r in runs if r["model"] == m)
                ckpt = trained_elsewhere.random_init(own, os.path.join(args.out, "random_init"))
            else:
                ckpt = pretraining.random_init(m, seed, os.path.join(args.out, "random_init", f"{m}.ckpt"))
            out.append(Entry(row, f"{m}-random", f"hear_api.{m}", ckpt, None))
        out += REFERENCES
    return out


def _models(args) -> List[str]:
    models = comma_list(args.models)
    unknown = sorted(set(models) - set(pretraining.MODELS))
    if unknown or not models:
        raise UsageError(f"--models: unknown {unknown}; choose from {', '.join(pretraining.MODELS)}")
    pretraining.checked_settings(args.settings)
    if args.strategy and not any(pretraining.has_strategy(m) for m in models):
        raise UsageError(f"--strategy {args.strategy}: none of --models {','.join(models)} has a strategy")
    return models


def _overrides(args, model: str, keep: List[str]) -> List[str]:
    """mart-pretrain overrides of one model's runs: the learning-curve steps, the strategy where it has one,
    the ``--set`` values."""
    strategy = [f"model.strategy={args.strategy}"] if args.strategy and pretraining.has_strategy(model) else []
    return keep + strategy + list(args.settings)


def _settings_text(args) -> str:
    return f"; with {' '.join(args.settings)}" if getattr(args, "settings", None) and not args.checkpoints else ""


def run(args) -> int:
    """``mart-bench run``: plan (settings, data, the runs to train), pretrain, evaluate every entry, then the
    result (table, comparisons, curve, export) and its files."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        _apply_quick(args)
    t0 = time.time()
    code = model_cards.commit()  # the code that trains and evaluates (recorded before anything runs)
    plan = _plan(args, code)
    runs = plan.runs if args.checkpoints else _pretrain(args, plan, code)
    main_entries = _entries(args, runs, plan.models, plan.seeds[0])
    inputs = _inputs(args, plan.data)
    entries, curve_entries = [], []
    for e in main_entries + curve.entries(runs, plan.steps):
        (entries if e in main_entries else curve_entries).append(_evaluate(args, e, plan.data, inputs))
    result = _result(args, plan, runs, entries, curve_entries, code, t0)
    _write(args, result, t0)
    return 0


@dataclass
class Plan:
    budget: "pretraining.Budget"
    models: List[str]
    seeds: List[int]
    data: Dict
    steps: List[int]  # learning-curve steps (none: no curve)
    runs: List[Dict]  # with --checkpoints: the runs trained elsewhere; else filled by _pretrain


def _plan(args, code: str) -> Plan:
    """What this benchmark will do, checked before anything runs: device, budget, models and seeds (or
    the runs of --checkpoints), data, learning-curve steps."""
    require_cuda(args.device)
    minutes = args.minutes if args.minutes and args.minutes > 0 else None
    budget = pretraining.Budget(minutes, args.steps, args.batch_size)
    runs: List[Dict] = []
    if args.checkpoints:  # trained elsewhere: read, not pretrained
        runs = trained_elsewhere.runs_from(args.checkpoints, code)
        models, seeds = [r["model"] for r in runs], sorted({r["seed"] for r in runs})
    else:
        models, seeds = _models(args), _int_list(args.seeds, "seeds")
    data = _data(args)
    return Plan(budget, models, seeds, data, curve.parse_steps(args.curve), runs)


def _pretrain(args, plan: Plan, code: str) -> List[Dict]:
    """Every (model, seed) run, in a child process each (a finished one is read back)."""
    keep = [f"run.keep_steps=[{','.join(map(str, plan.steps))}]"] if plan.steps else []
    runs = [pretraining.pretrain(m, s, plan.data["pretrain"], os.path.join(args.out, "pretrain", m, f"seed{s}"),
                                 plan.budget, args.device, args.num_workers, overrides=_overrides(args, m, keep),
                                 commit=code)
            for m in plan.models for s in plan.seeds]
    for r in runs:  # the cards say how the run differs from the configs
        r["budget"] = r["budget"] + _settings_text(args)
    return runs


def _inputs(args, data: Dict) -> Dict[str, str]:
    """What every entry's results are computed from besides its checkpoint (name -> digest): the style
    task's splits, the cover manifest, the probe grid."""
    return {"style_task": evaluation.task_digest(data["task"]), "covers": sha256_file(data["covers"]),
            "grid": f"{args.grid}/{args.grid_points}"}


def _evaluate(args, e: Entry, data: Dict, inputs: Dict[str, str]) -> Dict:
    """One entry on every task of the data: style (HEAR), covers, and playlists and recordings where given;
    results kept from an earlier run are used only while ``inputs`` and the checkpoint are unchanged."""
    folder = os.path.join(args.out, "eval", e.key)
    log.info("evaluating %s", e.key)
    evaluation.bind(e, folder, inputs)  # kept results only while what they were computed from is unchanged
    style = evaluation.style_task(e, data["task"], folder, args.grid, args.grid_points)
    covers = evaluation.covers(e, data["covers"], folder)
    entry = {"row": e.row, "key": e.key, "module": e.module, "checkpoint": e.checkpoint, "seed": e.seed,
             "style": style, "covers": covers}
    more = ""
    if data["playlists"]:  # the style task's embeddings, ranked: no second embedding pass
        pl = entry["playlists"] = evaluation.playlists(e, data["task"], data["playlists"], folder)
        more = f"; playlists HR@10 {pl['hr_at_10']:.3f} MPR {pl['mpr']:.3f}"
    if data["recordings"]:
        rec = evaluation.recordings(e, data["recordings"], folder)
        entry["soundtrack"], entry["tracks"] = rec["soundtrack"], rec["tracks"]
        more += (f"; soundtrack top1_acc {rec['soundtrack']['top1_acc']:.3f}; same-track MAP "
                 f"{rec['tracks']['map']:.3f}")
    log.info("%s: style top1_acc %.3f mAP %.3f; covers MAP %.3f P@10 %.3f MR1 %.1f%s", e.key,
             style["top1_acc"], style["mAP"], covers["map"], covers["p_at_10"], covers["mr1"], more)
    return entry


def _result(args, plan: Plan, runs: List[Dict], entries: List[Dict], curve_entries: List[Dict], code: str,
            t0: float) -> Dict:
    """The benchmark's result: what was run (meta), the table and comparisons, the learning curve, and
    the exported checkpoints (--export)."""
    data, models, seeds = plan.data, plan.models, plan.seeds
    rows = report.table_rows(entries)
    meta = {"data": data["description"], "data_root": data["root"], "task": os.path.basename(data["task"]),
            "cover_manifest": os.path.abspath(data["covers"]), "cover_tracks": entries[0]["covers"]["n_queries"],
            "cover_works": entries[0]["covers"]["works"], "seeds": seeds,
            "playlists": _playlist_text(entries[0].get("playlists"), data["playlists"]),
            "recordings": _recordings_text(entries[0], data["recordings"]),
            "budget": (trained_elsewhere.describe(runs) if args.checkpoints else plan.budget.describe(models))
            + _settings_text(args),
            "strategy": args.strategy, "settings": list(args.settings),
            "grid": args.grid, "grid_points": args.grid_points, "commit": code,
            "device": ", ".join(sorted({r["device"] for r in runs})) if args.checkpoints else args.device,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "total_minutes": (time.time() - t0) / 60}
    result = {"meta": meta, "runs": runs, "entries": entries, "table": rows,
              "comparisons": report.comparisons(rows, [m for m in models if m != "simclr"]),  # simclr: a reference
              "paired": report.paired_comparisons(entries, models)}
    if plan.steps:
        random_rows = {m: report.random_row(m) for m in models}
        result["curve"] = curve.curves(entries, curve_entries, runs, random_rows)
        result["curve_entries"] = curve_entries
        result["curve_trend"] = curve.trends(entries, curve_entries, runs, random_rows)
        curve.plot(result["curve"], os.path.join(args.out, "curve.png"))
    if args.export:
        best = model_cards.best_seeds(entries, runs)
        for model, run_ in best.items():  # the card compares with the same encoder, untrained, and the references
            run_["random_init"] = next((e for e in entries if e["row"] == report.random_row(model)), None)
            run_["references"] = {row: next((e for e in entries if e["row"] == row), None)
                                  for row in (report.MFCC_ROW, report.MUSICNN_ROW)}
        result["exported"] = model_cards.export(best, args.export, meta)
    return result


def _write(args, result: Dict, t0: float) -> None:
    """results.json, results.md (also printed) and results.png under --out."""
    write_json(os.path.join(args.out, "results.json"), result, sort_keys=False)
    text = report.markdown(result)
    write_text(os.path.join(args.out, "results.md"), text)
    report.plot(result, os.path.join(args.out, "results.png"))
    print(text)
    print(f"wrote {args.out}/results.json, results.md, results.png in {(time.time() - t0) / 60:.1f} min")
