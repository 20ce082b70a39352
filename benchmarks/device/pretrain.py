"""``python -m benchmarks.device.pretrain``: pretrain the models on one GPU for a time budget, from a kit.

    bash scripts/device_pretrain.sh --kit .device_kit --minutes 7 --models mart,pemr,simclr --device cuda \\
        --out runs/gpu [--smoke] [--sequential] [--bundle $OUT]

Each model is ``mart-pretrain`` in its own process with the papers' settings (no ``--config``; batch
48), ``--data KIT/audio``, seed 0 and ``--max-minutes``: by default all models at once on the one GPU,
each for the whole budget; ``--sequential`` runs them one after the other, each for an equal share.
A child's output goes to ``OUT/<model>/pretrain.log``; a failed model does not stop the others.
While they train, ``nvidia-smi`` is sampled every 2 s (GPU utilisation, memory used).

Then, per model: ``OUT/<model>.ckpt``, the run's state in the hand-over form ``--handover`` (default
``small``: float16 weights, Adam's second moment factored, about 2 bytes per parameter; see
``mart_upstream/train/handover.py``), with where and how long it trained in ``pretrain.device_run``:
it is evaluated as it is (``mart-bench run --checkpoints``), and a later window continues it
(``--resume-from``: the kit's ``resume/`` folder that ``mart-bench device-pack --resume RUN`` fills),
so the steps of several windows add up to one run. ``OUT/<model>/metrics.csv``, and for
the run ``OUT/device_run.json``: steps, batch, training time, clips/s (median of the logged rates
after the first), step time, peak GPU memory, the sampled utilisation and the environment.

``--smoke``: a check that takes about a minute: every model 12 steps and one ``torchrun`` run (one
process) of simclr for 6 steps, on a few of the kit's files; throughput only, no checkpoints.

``--bundle DIR``: the run folder as ``DIR/run.tar.part00``, ``part01``, ... (at most 15 MiB each)
plus ``DIR/device_run.json``, at most 8 files (``last.ckpt``, data indexes and demo audio left out);
``mart-bench device-unpack DIR --out RUN`` puts the folder back together.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from typing import Dict, List, Optional

from mart_upstream.argtypes import comma_list
from mart_upstream.fileio import atomic_path, write_json
from mart_upstream.distributed import require_cuda
from mart_upstream.errors import UsageError, command
from mart_upstream.models import model_names

from ..subprocesses import ROOT as REPO_ROOT
from ..subprocesses import child_env as _child_env
from ..subprocesses import log_tail

DEFAULT_KIT = os.path.join(REPO_ROOT, ".device_kit")
MODELS = tuple(model_names())  # every registered model can be trained on the device
DEFAULT_MODELS = ("mart", "pemr", "simclr")  # what a training call runs without --models
BIG_STEPS = 1_000_000  # the time budget ends every run
PART_BYTES = 15 * 2**20
PART_PREFIX = "run.tar.part"
MAX_RETURN_FILES = 8  # what a device call sends back
LEFT_OUT = {"last.ckpt", "data_index.json", "demo_audio", "tb", "smoke_files.txt"}
SMOKE = {"steps": 12, "minutes": 1.0, "log_every": 2, "files": 16, "ddp_steps": 6}
PROG = "device-train"



# -- GPU sampling ------------------------------------------------------------------------------------------
class GpuSampler:
    """``nvidia-smi`` every ``interval`` seconds in a background thread: mean utilisation, peak memory used."""

    QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, interval: float = 2.0, enabled: bool = True):
        self.exe = shutil.which("nvidia-smi") if enabled else None
        self.interval = interval
        self.samples: List[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        try:
            r = subprocess.run([self.exe, *self.QUERY], capture_output=True, text=True, timeout=10)
            rows = [[float(v) for v in line.split(",")] for line in r.stdout.strip().splitlines() if line.strip()]
        except (OSError, ValueError, subprocess.SubprocessError):
            return
        if r.returncode == 0 and rows:  # every visible GPU: mean utilisation, memory summed
            self.samples.append((sum(u for u, _ in rows) / len(rows), sum(m for _, m in rows)))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> "GpuSampler":
        if self.exe:
            self._thread.start()
        return self

    def stop(self) -> Optional[Dict]:
        if not self.exe:
            return None
        self._stop.set()
        self._thread.join(timeout=15)
        if not self.samples:
            return None
        return {"mean_util_pct": round(statistics.fmean(u for u, _ in self.samples), 1),
                "peak_mem_used_mib": max(m for _, m in self.samples), "samples": len(self.samples),
                "interval_s": self.interval}


# -- the runs ----------------------------------------------------------------------------------------------
def default_overrides() -> List[str]:
    """The kit's audio was checked when packed, so the silence scan is skipped; every file is decoded
    into memory once."""
    return ["data.check_silence=false", "data.in_memory=true"]


def child_env(threads: int) -> Dict[str, str]:
    env = _child_env(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.setdefault("TQDM_MININTERVAL", "10")  # a progress line every 10 s, not a log full of them
    return env


@dataclasses.dataclass
class ModelRun:
    name: str  # model name, or "ddp-simclr"
    cmd: List[str]
    run_dir: str
    minutes: float
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    wall_s: float = 0.0
    resumed_step: int = 0  # where a continued run starts (0: a new run)
    windows: List[Dict] = dataclasses.field(default_factory=list)  # the earlier windows of a continued run
    returncode: Optional[int] = None
    train_started_at: Optional[float] = None  # when its progress bar first appeared in its log
    log_offset: int = 0  # where this child's own output starts in the (appended) log

    @property
    def log_path(self) -> str:
        return os.path.join(self.run_dir, "pretrain.log")

    def start(self, env: Dict[str, str]) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write("$ " + " ".join(self.cmd) + "\n")
            f.flush()
            self.log_offset = f.tell()
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self.started = time.perf_counter()

    def training_started(self) -> Optional[float]:
        """When the child's first training step began (its progress bar appeared in the log), or None.

        The deadline counts from there, so scanning and decoding the kit into memory do not eat the
        grace time."""
        if self.train_started_at is None:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self.log_offset)
                    if b" pretrain:" in f.read():
                        self.train_started_at = time.perf_counter()
            except OSError:
                pass
        return self.train_started_at

    def poll(self, deadline_s: float) -> bool:
        """True once finished; a child past its wall-clock deadline (from its first training step, or from
        its start while it has not begun training) is stopped (its last checkpoint stays)."""
        if self.returncode is not None:
            return True
        code = self.proc.poll()
        t0 = self.training_started() or self.started
        if code is None and time.perf_counter() - t0 > deadline_s:
            with open(self.log_path, "a") as f:
                f.write(f"\n{PROG}: stopped after {deadline_s:.0f} s of wall-clock time\n")
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        if code is None:
            return False
        self.returncode, self.wall_s = code, round(time.perf_counter() - self.started, 1)
        return True


def run_jobs(jobs: List[ModelRun], sequential: bool, env: Dict[str, str], grace_s: float, report) -> None:
    """Run ``jobs`` all at once (or one after the other), calling ``report(job)`` as each finishes."""
    waves = [[j] for j in jobs] if sequential else [jobs]
    for wave in waves:
        for j in wave:
            j.start(env)
        pending = list(wave)
        while pending:
            time.sleep(0.5)
            for j in [j for j in pending if j.poll(j.minutes * 60 + grace_s)]:
                pending.remove(j)
                report(j)


def read_metrics(path: str) -> List[Dict[str, str]]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(rows: List[Dict[str, str]], key: str) -> List[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]))
        except (KeyError, TypeError, ValueError):
            pass
    return out


def summarise(job: ModelRun) -> Dict:
    """A finished child -> steps, batch, training time, clips/s, step time, peak memory (from its
    checkpoint and metrics.csv)."""
    from mart_upstream.checkpoint import CheckpointError, read_checkpoint

    rows = read_metrics(os.path.join(job.run_dir, "metrics.csv"))
    rates = _floats(rows, "clips_per_s")
    rates = rates[1:] if len(rates) > 1 else rates  # the first interval holds start-up and warm-up
    info: Dict = {"status": "ok" if job.returncode == 0 else "failed", "exit_code": job.returncode,
                  "wall_s": job.wall_s, "minutes_budget": job.minutes,
                  "log": os.path.relpath(job.log_path, os.path.dirname(job.run_dir)),
                  "clips_per_s": round(statistics.median(rates), 2) if rates else None}
    mem = _floats(rows, "max_mem_gb")
    info["peak_mem_gb"] = round(max(mem), 3) if mem else None
    ckpt = os.path.join(job.run_dir, "last.ckpt")
    try:
        state = read_checkpoint(ckpt)
    except CheckpointError as e:
        info.update(status="failed" if job.returncode else "no checkpoint", error=str(e))
        return info
    pre = state.get("pretrain") or {}
    batch = int(((pre.get("settings") or {}).get("run") or {}).get("batch_size", 0)) or None
    steps, train_s = int(state["step"]), float(pre.get("train_seconds", 0.0))
    info.update(steps=steps, batch_size=batch, train_seconds=round(train_s, 1), train_minutes=round(train_s / 60, 3),
                world_size=pre.get("world_size", 1),
                step_time_s=round(batch / info["clips_per_s"], 4) if batch and info["clips_per_s"] else None,
                mean_step_s=round(train_s / steps, 4) if steps else None)
    return info


def export_checkpoint(job: ModelRun, info: Dict, out: str, card: Dict, mode: str = "small") -> str:
    """``OUT/<model>.ckpt``: the run's last.ckpt in the hand-over form ``mode`` (evaluable, and resumable by
    a later window), and where and how it was trained in ``pretrain['device_run']``."""
    from mart_upstream.checkpoint import compact, read_checkpoint, write_state
    from mart_upstream.train.handover import reduce_state

    state = reduce_state(read_checkpoint(os.path.join(job.run_dir, "last.ckpt")), mode)
    windows = list(job.windows)  # the earlier windows of this run (its last.ckpt keeps no such record)
    windows.append(dict(card, steps_from=job.resumed_step, steps_to=int(state["step"]),
                        train_minutes=info.get("train_minutes")))
    state["pretrain"]["device_windows"] = windows  # the run's record: every window that added steps
    state["pretrain"]["device_run"] = dict(card, **{k: info.get(k) for k in (
        "steps", "batch_size", "train_minutes", "clips_per_s", "step_time_s", "peak_mem_gb")})
    path = os.path.join(out, f"{job.name}.ckpt")
    write_state(path, state)
    for kept in sorted(glob.glob(os.path.join(job.run_dir, "step_*.ckpt"))):  # learning-curve points, compacted
        write_state(kept, compact(read_checkpoint(kept)))
    return path


def environment(device: str) -> Dict:
    import torch

    env = {"torch": str(torch.__version__), "cuda": torch.version.cuda and str(torch.version.cuda),
           "gpu": None, "gpu_count": 0,
           "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    if device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return env


def join_parts(kit: str) -> int:
    """A kit packed with ``--split`` came in several transfers (KIT, KIT.part2, ...): move every part's audio
    into KIT/audio and check that each file of the manifest is there with its size; -> the number of parts."""
    from .pack import part_folder

    path = os.path.join(kit, "manifest.json")
    if not os.path.isfile(path):
        return 1
    with open(path) as f:
        m = json.load(f)
    parts = int(m.get("parts", 1))
    for part in range(2, parts + 1):
        folder = os.path.join(part_folder(kit, part), "audio")
        if not os.path.isdir(folder):
            continue  # joined by an earlier call, or not here: the check below names what is missing
        for d, _, names in os.walk(folder):
            for n in names:
                src = os.path.join(d, n)
                dst = os.path.join(kit, "audio", os.path.relpath(src, folder))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(src, dst)
    missing = [e for e in m.get("files", []) if not os.path.isfile(os.path.join(kit, "audio", *e["path"].split("/")))
               or os.path.getsize(os.path.join(kit, "audio", *e["path"].split("/"))) != e["bytes"]]
    if missing:
        absent = sorted({e.get("part", 1) for e in missing})
        raise UsageError(f"the kit is incomplete: {len(missing)} of its {len(m['files'])} audio files are missing or "
                         f"of another size (e.g. {missing[0]['path']}), from part(s) "
                         + ", ".join(os.path.basename(part_folder(kit, p)) for p in absent)
                         + ": carry every part of `mart-bench device-pack --split` to this machine")
    return parts


def _kit_summary(kit: str) -> Dict:
    path = os.path.join(kit, "manifest.json")
    if not os.path.isfile(path):
        return {"path": kit, "manifest": None}
    with open(path) as f:
        m = json.load(f)
    return {"path": kit, "codec": (m.get("format") or {}).get("codec"), "files": len(m.get("files", [])),
            "total_seconds": m.get("total_seconds"), "description": (m.get("source") or {}).get("description"),
            "commit": m.get("commit")}


def smoke_file_list(kit_audio: str, path: str, n: int) -> str:
    """A few of the kit's files, spread over its folders, for the smoke runs (paths relative to the kit)."""
    found = []
    for d, dirs, names in os.walk(kit_audio):
        dirs.sort()
        found += [os.path.relpath(os.path.join(d, x), kit_audio) for x in sorted(names)
                  if x.lower().endswith((".ogg", ".mp3", ".wav", ".flac"))]
    step = max(1, len(found) // n)
    with atomic_path(path, suffix=".txt") as tmp, open(tmp, "w") as f:
        f.write("\n".join(found[::step][:n]) + "\n")
    return path


def _workers(args, concurrent: int) -> int:
    if args.num_workers is not None:
        return args.num_workers
    return max(1, min(6, ((os.cpu_count() or 2) - concurrent) // concurrent))


def for_model(overrides: List[str], model: str) -> List[str]:
    """Overrides for one model: ``KEY=VALUE`` applies to every model, ``MODEL:KEY=VALUE`` to that model only."""
    out = []
    for o in overrides:
        head, _, rest = o.partition(":")
        if rest and "=" not in head:
            if head == model:
                out.append(rest)
        else:
            out.append(o)
    return out


def build_jobs(args, models: List[str], overrides: List[str]) -> List[ModelRun]:
    audio = os.path.join(args.kit, "audio")
    concurrent = 1 if args.sequential else len(models) + bool(args.smoke)
    workers = _workers(args, concurrent)
    share = args.minutes / len(models) if args.sequential else args.minutes
    extra: List[str] = []
    steps, log_every = BIG_STEPS, args.log_every
    if args.smoke:
        share, steps, log_every = SMOKE["minutes"], SMOKE["steps"], SMOKE["log_every"]
        extra = ["--file-list", smoke_file_list(audio, os.path.join(args.out, "smoke_files.txt"), SMOKE["files"])]
    common = ["--data", audio, "--device", args.device, "--seed", str(args.seed), "--num-workers", str(workers),
              "--ckpt-every", "500", *extra]
    jobs = []
    for m in models:
        cmd = [sys.executable, "-m", "mart_upstream.train", "--model", m, "--out", os.path.join(args.out, m),
               "--max-minutes", f"{share:g}", "--steps", str(steps), "--log-every", str(log_every), *common,
               *for_model(overrides, m)]
        job = ModelRun(m, cmd, os.path.join(args.out, m), share)
        start = resume_state(args.resume_from, m)
        if start is not None:  # a later window of the same run: its state becomes the run's last.ckpt
            path, step, minutes, job.windows = start
            os.makedirs(job.run_dir, exist_ok=True)
            shutil.copyfile(path, os.path.join(job.run_dir, "last.ckpt"))
            # --max-minutes counts the whole run's training: this window adds its share
            cmd[cmd.index("--max-minutes") + 1] = f"{minutes + share:g}"
            cmd.append("--resume")
            job.resumed_step = step
        jobs.append(job)
    if args.smoke:
        run_dir = os.path.join(args.out, "ddp-simclr")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "mart_upstream.train", "--model", "simclr", "--out", run_dir, "--max-minutes", f"{share:g}",
               "--steps", str(SMOKE["ddp_steps"]), "--log-every", "1", *common, *for_model(overrides, "simclr")]
        jobs.append(ModelRun("ddp-simclr", cmd, run_dir, share))
    return jobs


def resume_state(folder: Optional[str], model: str):
    """``folder/<model>.ckpt`` when it is a run to continue: (path, step, training minutes so far, its record
    of earlier windows), else None.
    A file there that is not a hand-over state of a ``model`` run is an error naming it."""
    if not folder:
        return None
    path = os.path.join(folder, f"{model}.ckpt")
    if not os.path.isfile(path):
        return None
    from mart_upstream.checkpoint import is_run_state, read_checkpoint

    state = read_checkpoint(path)
    if state["model_name"] != model or not is_run_state(state):
        raise UsageError(f"{path} is not a run of {model} to continue (it needs the optimizer state a device "
                         "run's <model>.ckpt or a run's last.ckpt holds)")
    return (path, int(state["step"]), float(state["pretrain"].get("train_seconds", 0.0)) / 60,
            list(state["pretrain"].get("device_windows", [])))


# -- the bundle --------------------------------------------------------------------------------------------
def bundle_members(run_dir: str) -> List[str]:
    """Files of the run folder that go back (relative paths, sorted)."""
    out = []
    for d, dirs, names in os.walk(run_dir):
        dirs[:] = sorted(x for x in dirs if x not in LEFT_OUT)
        out += [os.path.relpath(os.path.join(d, n), run_dir) for n in sorted(names)
                if n not in LEFT_OUT and not n.startswith(".tmp-")]
    return out


def bundle(run_dir: str, dest: str, summary_path: str) -> Dict:
    """``dest/run.tar.partNN`` (at most 15 MiB each) and ``dest/device_run.json``: at most 8 files."""
    os.makedirs(dest, exist_ok=True)
    members = bundle_members(run_dir)
    with tempfile.TemporaryDirectory(prefix="device-bundle-") as tmp:
        tar_path = os.path.join(tmp, "run.tar")
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in members:
                tar.add(os.path.join(run_dir, rel), arcname=rel.replace(os.sep, "/"), recursive=False)
        size = os.path.getsize(tar_path)
        n_parts = max(1, math.ceil(size / PART_BYTES))
        if n_parts + 1 > MAX_RETURN_FILES:
            big = sorted(((os.path.getsize(os.path.join(run_dir, m)), m) for m in members), reverse=True)[:3]
            why = (f"the run folder's tar is {size / 2**20:.1f} MiB: {n_parts} parts of 15 MiB plus device_run.json "
                   f"are more than the {MAX_RETURN_FILES} files that come back (largest: "
                   + ", ".join(f"{m} {s / 2**20:.1f} MiB" for s, m in big) + ")")
            _copy_summary(summary_path, dest, {"error": why})  # the numbers still come back
            raise UsageError(why)
        for old in os.listdir(dest):  # parts of an earlier bundle would be joined with these
            if old.startswith(PART_PREFIX):
                os.unlink(os.path.join(dest, old))
        sha, parts = hashlib.sha256(), []
        with open(tar_path, "rb") as f:
            for i in range(n_parts):
                chunk = f.read(PART_BYTES)
                sha.update(chunk)
                name = f"{PART_PREFIX}{i:02d}"
                with atomic_path(os.path.join(dest, name)) as t, open(t, "wb") as g:
                    g.write(chunk)
                parts.append(name)
    return _copy_summary(summary_path, dest, {"parts": parts, "tar_bytes": size, "sha256": sha.hexdigest(),
                                              "members": len(members)})


def _copy_summary(summary_path: str, dest: str, bundle_info: Dict) -> Dict:
    """``dest/device_run.json``: the run's summary with what the bundle holds."""
    with open(summary_path) as f:
        summary = json.load(f)
    summary["bundle"] = bundle_info
    write_json(os.path.join(dest, "device_run.json"), summary, sort_keys=False)
    return bundle_info


# -- the command -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="device_pretrain.sh", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", default=DEFAULT_KIT, help="kit folder from `mart-bench device-pack` (default .device_kit)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--minutes", type=float, default=7.0, help="training minutes (each model's, or shared with "
                                                              "--sequential; default 7)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated, from {','.join(MODELS)} (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sequential", action="store_true", help="one model after the other, minutes shared")
    p.add_argument("--smoke", action="store_true",
                   help="a short check: 12 steps each and a torchrun run, no checkpoints")
    p.add_argument("--bundle", metavar="DIR", help="write the run as tar parts of at most 15 MiB to DIR")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="mart-pretrain config override, repeatable (after the defaults data.check_silence=false and, "
                        "where supported, data.in_memory=true)")
    p.add_argument("--no-default-overrides", action="store_true", help="leave out the default overrides")
    p.add_argument("--num-workers", type=int, help="data-loading processes per model (default: from the CPU count)")
    p.add_argument("--log-every", type=int, default=25, help="steps between logged rates (default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--handover", choices=("full", "compact", "small"), default="small",
                   help="the form of OUT/<model>.ckpt (default small: float16 weights and a factored Adam state, "
                        "about 2 bytes per parameter, enough to continue the run in a later window)")
    p.add_argument("--resume-from", metavar="DIR",
                   help="continue the runs whose DIR/<model>.ckpt a device run wrote (default: KIT/resume when "
                        "the kit has one, from `mart-bench device-pack --resume RUN`)")
    p.add_argument("--grace-minutes", type=float, default=4.0,
                   help="wall-clock time a run may take beyond its budget (start-up, data loading) before it is "
                        "stopped (default 4)")
    return p


def _check(args) -> List[str]:
    models = comma_list(args.models)
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models or len(set(models)) != len(models):
        raise UsageError(f"--models {args.models!r}: choose distinct names from {', '.join(MODELS)}")
    if not args.minutes > 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes}")
    if not os.path.isdir(os.path.join(args.kit, "audio")):
        raise UsageError(f"{args.kit} is not a kit: no audio/ folder (build one with `mart-bench device-pack`)")
    require_cuda(args.device)
    stale = [m for m in models + ["ddp-simclr"] if os.path.exists(os.path.join(args.out, m, "last.ckpt"))]
    if stale:
        raise UsageError(f"{args.out} already holds a run of {', '.join(stale)}; use a new --out")
    bad = [o for o in args.override if "=" not in o]
    if bad:
        raise UsageError(f"--override {bad[0]!r} is not of the form key=value")
    return models


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.kit, args.out = os.path.abspath(args.kit), os.path.abspath(args.out)
    args.bundle = args.bundle and os.path.abspath(args.bundle)
    if args.resume_from is None and os.path.isdir(os.path.join(args.kit, "resume")):
        args.resume_from = os.path.join(args.kit, "resume")
    t0 = time.perf_counter()
    models = _check(args)
    parts = join_parts(args.kit)
    if parts > 1:
        print(f"{PROG}: joined the {parts} parts of the kit", flush=True)
    from ..run.model_cards import commit

    os.makedirs(args.out, exist_ok=True)
    overrides = ([] if args.no_default_overrides else default_overrides()) + args.override
    jobs = build_jobs(args, models, overrides)
    env = environment(args.device)
    kit = _kit_summary(args.kit)
    print(f"{PROG}: {', '.join(j.name for j in jobs)} on {env['gpu'] or args.device}, "
          f"{'smoke check' if args.smoke else f'{jobs[0].minutes:g} min each'}"
          f"{', one after the other' if args.sequential else ', all at once'}; logs in {args.out}/<model>/",
          flush=True)
    results: Dict[str, Dict] = {}

    def report(job: ModelRun) -> None:
        info = results[job.name] = summarise(job)
        if info["status"] == "ok":
            print(f"{PROG}: {job.name}: {info['steps']} steps of batch {info['batch_size']} in "
                  f"{info['train_minutes']:.2f} min, {info['clips_per_s']} clips/s, wall {job.wall_s:.0f} s",
                  flush=True)
        else:
            print(f"{PROG}: {job.name}: {info['status'].upper()} (exit {job.returncode}); end of "
                  f"{job.log_path}:\n{log_tail(job.log_path, 3000)}", file=sys.stderr, flush=True)

    sampler = GpuSampler(enabled=args.device == "cuda").start()
    try:
        run_jobs(jobs, args.sequential, child_env(max(1, (os.cpu_count() or 1) // (1 if args.sequential
                                                                                  else len(jobs)))),
                 args.grace_minutes * 60, report)
    finally:
        gpu_use = sampler.stop()
    card = {"device": args.device, "gpu": env["gpu"], "torch": env["torch"], "cuda": env["cuda"],
            "kit": kit.get("description"), "kit_codec": kit.get("codec"), "commit": commit(),
            "kit_commit": kit.get("commit"), "sequential": args.sequential, "minutes": args.minutes,
            "models_together": 1 if args.sequential else len(models)}
    if not args.smoke:
        for j in jobs:
            if results[j.name].get("steps"):
                export_checkpoint(j, results[j.name], args.out, card, args.handover)
                results[j.name]["resumed_from_step"] = j.resumed_step
                results[j.name]["window_steps"] = results[j.name]["steps"] - j.resumed_step
                results[j.name]["checkpoint"] = f"{j.name}.ckpt"
    summary = {"models": {m: results[m] for m in models}, "ddp_smoke": results.get("ddp-simclr"),
               "settings": {"models": models, "minutes": args.minutes, "sequential": args.sequential,
                            "smoke": args.smoke, "device": args.device, "seed": args.seed,
                            "overrides": overrides, "num_workers": int(jobs[0].cmd[jobs[0].cmd.index(
                                "--num-workers") + 1]), "minutes_per_model": jobs[0].minutes},
               "environment": env, "gpu_utilisation": gpu_use, "kit": kit, "commit": card["commit"],
               "wall_s": round(time.perf_counter() - t0, 1)}
    summary_path = os.path.join(args.out, "device_run.json")
    write_json(summary_path, summary, sort_keys=False)
    if args.bundle:
        b = bundle(args.out, args.bundle, summary_path)
        print(f"{PROG}: bundle {args.bundle}: {len(b['parts'])} parts, {b['tar_bytes'] / 2**20:.1f} MiB",
              flush=True)
    failed = [n for n, r in results.items() if r["status"] != "ok"]
    print(f"{PROG}: wrote {summary_path}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
