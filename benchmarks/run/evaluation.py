"""The two evaluations of the offline benchmark, through the real harness paths.

* classification (a HEAR task folder): heareval's embeddings runner, then its predictions runner
  (a probe chosen on the validation split by heareval's own grid search), both as child processes
  exactly as a user runs them; the test scores come from ``test.predicted-scores.json``;
* cover songs (a manifest CSV): scene embeddings from the same HEAR module
  (``benchmarks.cover_song.embed``), every version a query against all others, MAP / P@10 / MR1
  (``benchmarks.cover_song.search``, MIREX definitions). The chroma reference ranks by its
  key-invariant similarity instead of the cosine;
* playlists (a playlist file, when the data has one): playlist continuation by ItemKNN on the scene
  embeddings the classification step already wrote for the style clips (nothing is embedded again),
  HR@10 and MPR (``mart_upstream.tasks.playlists``, Strategies §4.4), cosine for every entry;
* recordings (``recordings/tracks.csv``, when the data has it): one pass of scene embeddings over the
  clips of the evaluation tracks of real recorded soundtracks, then soundtrack identification (the
  game; the grouped cross-validated linear probe, grouped by track) and same-track retrieval (every
  clip a query for the other clips of its track; MAP, P@1 as top1), cosine for every entry.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from mart_upstream.tasks import covers as cover_datasets
from mart_upstream.tasks import playlists as playlist_task
from ..cover_song.embed import HearSource, embed_tracks
from mart_upstream.tasks.metrics import average_precision, cosine_similarity, metrics_from_relevance, rank_relevance
from mart_upstream.fileio import sha256_file, write_json
from mart_upstream.errors import TaskError

from ..subprocesses import run_logged
from . import paired

log = logging.getLogger("mart-bench.run")
STYLE_METRICS = ("top1_acc", "mAP")
COVER_METRICS = ("map", "p_at_10", "mr1")
PLAYLIST_METRICS = ("hr_at_10", "mpr")
PLAYLIST_QUERIES = "random"  # the query tracks of each playlist: seeded draws (tasks/playlists.py)
SOUNDTRACK_METRICS = ("top1_acc", "mAP")
TRACK_METRICS = ("map", "top1")


@dataclass
class Entry:
    """One row of the table: a HEAR module and its weights (``""``: the module needs none)."""

    row: str  # table row, e.g. "mart", "mart (random init)", "MFCC statistics"
    key: str  # folder name of this entry's results, e.g. "mart-seed1"
    module: str
    checkpoint: str = ""
    seed: Optional[int] = None
    key_invariant: bool = False  # cover similarity: max over 12 chroma rotations


def _run(cmd, log_path: str, what: str) -> None:
    # heareval reloads its own Lightning probe checkpoints with torch.load; they hold more than tensors
    run_logged(cmd, log_path, what, TaskError, TF_CPP_MIN_LOG_LEVEL="2", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""))


INPUTS_FILE = "inputs.json"
TASK_FILES = ("task_metadata.json", "labelvocabulary.csv", "train.json", "valid.json", "test.json")


def task_digest(task_dir: str) -> str:
    """sha256 over a HEAR task folder's metadata and split files (what the labels and splits are)."""
    h = hashlib.sha256()
    for name in TASK_FILES:
        path = os.path.join(task_dir, name)
        h.update(name.encode() + b"\0" + (sha256_file(path).encode() if os.path.isfile(path) else b"-") + b"\0")
    return h.hexdigest()


def bind(entry: Entry, out_dir: str, inputs: Dict[str, str]) -> None:
    """Ties the results kept in ``out_dir`` to what they are computed from: the entry's module, the sha256
    of its checkpoint, and ``inputs`` (name -> digest, e.g. of the task folder). Where any of these
    changed since the results were written, they are stale: the folder is emptied and the entry is
    evaluated again. A folder kept from before this record existed is taken as it is and recorded."""
    want = {"module": entry.module, "checkpoint": os.path.abspath(entry.checkpoint) if entry.checkpoint else "",
            "checkpoint_sha256": sha256_file(entry.checkpoint) if entry.checkpoint else "",
            "inputs": dict(sorted(inputs.items()))}
    path = os.path.join(out_dir, INPUTS_FILE)
    have = _kept(path)
    changed = _changed(have, want) if have is not None else []
    if changed:
        log.warning("%s: %s changed since its results were kept; evaluating it again", entry.key, ", ".join(changed))
        staged = out_dir.rstrip(os.sep) + ".stale"
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(out_dir, staged)
        shutil.rmtree(staged)
    elif have is None and os.path.isdir(out_dir) and os.listdir(out_dir):
        log.info("%s: results kept without a record of their inputs; taken as they are", entry.key)
    os.makedirs(out_dir, exist_ok=True)
    write_json(path, want, sort_keys=False)


def _changed(have: Dict, want: Dict) -> List[str]:
    """What makes kept results stale: a different module or checkpoint bytes, or an input both records
    name with different digests (an input a later version adds, or one this run does not use, does not)."""
    old = have.get("inputs") or {}
    return ([k for k in ("module", "checkpoint_sha256") if have.get(k) != want[k]]
            + [k for k, v in want["inputs"].items() if k in old and old[k] != v])


def _kept(path: str) -> Optional[Dict]:
    """A result kept by an earlier, interrupted benchmark run (so nothing is evaluated twice), or None."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def style_task(entry: Entry, task_dir: str, out_dir: str, grid: str = "default", grid_points: int = 8) -> Dict:
    """heareval embeddings + predictions on one task folder -> test scores and the chosen probe."""
    result_path = os.path.join(out_dir, "style.json")
    if (kept := _kept(result_path)) is not None:
        return kept
    task_dir = os.path.abspath(task_dir)
    emb_root = os.path.join(out_dir, "embeddings")
    log_path = os.path.join(out_dir, "heareval.log")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "heareval.embeddings.runner", entry.module, "--tasks-dir",
           os.path.dirname(task_dir), "--task", os.path.basename(task_dir), "--embeddings-dir", emb_root]
    if entry.checkpoint:
        cmd[4:4] = ["--model", entry.checkpoint]
    _run(cmd, log_path, f"heareval embeddings runner ({entry.key})")
    t1 = time.perf_counter()
    emb_dirs = glob.glob(os.path.join(emb_root, "*", os.path.basename(task_dir)))
    if len(emb_dirs) != 1:
        raise TaskError(f"heareval embeddings runner wrote {len(emb_dirs)} task folders under {emb_root}, expected 1")
    _run([sys.executable, "-m", "heareval.predictions.runner", emb_dirs[0], "--grid", grid,
          "--grid-points", str(grid_points)], log_path, f"heareval predictions runner ({entry.key})")
    t2 = time.perf_counter()
    with open(os.path.join(emb_dirs[0], "test.predicted-scores.json")) as f:
        scores = json.load(f)
    if "test" not in scores:
        raise TaskError(f"{emb_dirs[0]}: expected a train/valid/test task (trainvaltest split), "
                        f"got the scores {sorted(scores)}")
    test = scores["test"]
    out = {m: float(test[f"test_{m}"]) for m in STYLE_METRICS}
    emb = paired.load_scene_embeddings(emb_dirs[0])
    try:
        cv = paired.grouped_cv(emb["X"], emb["labels"], emb["groups"])
        out["cv"] = dict(cv, names=emb["names"].tolist(), groups=emb["groups"].tolist())
    except ValueError as e:  # a task too small to cross-validate: heareval's scores only
        log.warning("%s: no grouped cross-validation (%s)", entry.key, e)
        out["cv"] = None
    out.update(validation_score=float(test["validation_score"]), probe=scores.get("hparams", {}),
               embed_s=round(t1 - t0, 1), predict_s=round(t2 - t1, 1))
    out["probe"] = {k: v for k, v in out["probe"].items() if isinstance(v, (int, float, str))}
    write_json(result_path, out, sort_keys=False)
    return out


def key_invariant_similarity(scene: np.ndarray) -> np.ndarray:
    """Chroma scene embeddings [N, 24] -> [N, N]: max over the 12 rotations of one mean chroma of the
    cosine similarity between mean chromas (a transposition rotates the chroma)."""
    c = np.asarray(scene, dtype=np.float64)[:, :12]
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return np.max(np.stack([c @ np.roll(c, k, axis=1).T for k in range(12)]), axis=0)


def covers(entry: Entry, manifest: str, out_dir: str) -> Dict:
    """Cover-song retrieval over the whole manifest with the entry's scene embeddings."""
    result_path = os.path.join(out_dir, "covers.json")
    if (kept := _kept(result_path)) is not None:
        return kept
    t0 = time.perf_counter()
    collection = cover_datasets.read_manifest(manifest)
    source = HearSource(entry.module, entry.checkpoint)
    emb, kept, bad = embed_tracks(source, collection.tracks)
    if bad:
        raise TaskError(f"{len(bad)} cover tracks could not be read, e.g. {bad[0]}")
    works = [t.work for t in kept]
    # exact search: every query ranked once; the metrics and each query's AP come from the same lists
    sim = key_invariant_similarity(emb) if entry.key_invariant else cosine_similarity(emb)
    rel = rank_relevance(sim, works)
    res = metrics_from_relevance(rel, rel.sum(axis=1))
    ap = average_precision(rel, rel.sum(axis=1))
    out = {m: float(res[m]) for m in COVER_METRICS}
    out.update(top1=float(res["top1"]), n_queries=int(res["n_queries"]), works=len(set(works)),
               search="exact, key-invariant (max over 12 chroma rotations)" if entry.key_invariant else "exact",
               dim=int(emb.shape[1]), embed_s=round(time.perf_counter() - t0, 1),
               query_ap=[None if np.isnan(a) else float(a) for a in ap], query_works=works)
    write_json(result_path, out, sort_keys=False)
    return out


def playlists(entry: Entry, task_dir: str, playlist_file: str, out_dir: str) -> Dict:
    """HR@10 and MPR of ItemKNN playlist continuation with the style task's scene embeddings (written
    by ``style_task`` into ``out_dir``); track ids are the task's clip names without ``.wav``. A kept
    result is reused only while the playlist file is unchanged."""
    result_path = os.path.join(out_dir, "playlists.json")
    digest = sha256_file(playlist_file)
    kept = _kept(result_path)  # reused while the playlists and the query protocol are the same
    if kept is not None and kept.get("playlists_sha256") == digest and kept.get("queries") == PLAYLIST_QUERIES:
        return kept
    t0 = time.perf_counter()
    emb_dirs = glob.glob(os.path.join(out_dir, "embeddings", "*", os.path.basename(os.path.abspath(task_dir))))
    if len(emb_dirs) != 1:
        raise TaskError(f"playlists: expected the style task's embeddings in one folder under {out_dir}/embeddings, "
                        f"found {len(emb_dirs)}; remove {out_dir}/style.json to embed again")
    emb = paired.load_scene_embeddings(emb_dirs[0])
    found = playlist_task.read_playlists(playlist_file)
    res = playlist_task.evaluate(emb["X"], [os.path.splitext(n)[0] for n in emb["names"]], found.playlists,
                                 queries=PLAYLIST_QUERIES)
    items = res["items"]
    out = {m: float(res[m]["mean"]) for m in PLAYLIST_METRICS}
    out.update({f"{m}_ci": [res[m]["ci_low"], res[m]["ci_high"]] for m in PLAYLIST_METRICS})
    out.update(n_playlists=res["playlists"], n_items=len(items["hit"]), negatives=res["negatives"],
               n_query=res["n_query"], queries=res["queries"], search=res["score"], playlists_sha256=digest,
               probe_s=round(time.perf_counter() - t0, 2), item_playlist=items["playlist"], item_track=items["track"],
               item_hit=items["hit"], item_percentile=items["percentile"])
    write_json(result_path, out, sort_keys=False)
    return out


def recordings(entry: Entry, manifest: str, out_dir: str) -> Dict:
    """Soundtrack identification (grouped CV) and same-track retrieval from one embedding pass over the
    clips of ``manifest`` (work = ``<game>.<track>``). A kept result is reused while the manifest is unchanged."""
    result_path = os.path.join(out_dir, "recordings.json")
    digest = sha256_file(manifest)
    if (kept := _kept(result_path)) is not None and kept.get("manifest_sha256") == digest:
        return kept
    t0 = time.perf_counter()
    collection = cover_datasets.read_manifest(manifest)
    emb, clips, bad = embed_tracks(HearSource(entry.module, entry.checkpoint), collection.tracks)
    if bad:
        raise TaskError(f"{len(bad)} recorded clips could not be read, e.g. {bad[0]}")
    tracks = [t.work for t in clips]
    games = [w.split(".", 1)[0] for w in tracks]
    cv = paired.grouped_cv(emb, games, tracks)
    rel = rank_relevance(cosine_similarity(emb), tracks)
    res = metrics_from_relevance(rel, rel.sum(axis=1))
    ap = average_precision(rel, rel.sum(axis=1))
    out = {"soundtrack": {"top1_acc": cv["top1_acc"], "mAP": cv["mAP"], "games": len(set(games)),
                          "chance": max(games.count(g) for g in set(games)) / len(games),
                          "cv": dict(cv, names=[t.path for t in clips], groups=tracks)},
           "tracks": {"map": float(res["map"]), "top1": float(res["top1"]), "p_at_10": float(res["p_at_10"]),
                      "n_queries": int(res["n_queries"]), "tracks": len(set(tracks)),
                      "query_ap": [None if np.isnan(a) else float(a) for a in ap], "query_works": tracks},
           "manifest_sha256": digest, "dim": int(emb.shape[1]), "embed_s": round(time.perf_counter() - t0, 1)}
    write_json(result_path, out, sort_keys=False)
    return out


def find_task(tasks_dir: str, name: Optional[str] = None) -> str:
    """The classification task folder under ``tasks_dir`` (the one there, or ``name``)."""
    if not os.path.isdir(tasks_dir):
        raise TaskError(f"no task folder: {tasks_dir} does not exist")
    found = sorted(d for d in os.listdir(tasks_dir) if os.path.isfile(os.path.join(tasks_dir, d, "task_metadata.json")))
    if name:
        if name not in found:
            raise TaskError(f"task {name!r} not in {tasks_dir} (found: {', '.join(found) or 'none'})")
        return os.path.join(tasks_dir, name)
    if len(found) != 1:
        raise TaskError(f"{tasks_dir} holds {len(found)} HEAR task folders ({', '.join(found) or 'none'}); "
                        "name one with --task")
    return os.path.join(tasks_dir, found[0])


def summarise(values) -> Dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
