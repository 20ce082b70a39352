"""``mart-bench speed``: how fast the encoders are, on the same random audio in one run.

    mart-bench speed --out DIR [--quick] [--device cpu|cuda] [--models mart,pemr,simclr,samplecnn]
                     [--variants plain,fast,onnx] [--length-variants fast]

1. Embedding throughput (audio seconds per wall-clock second) through the real embedding path
   (``frame_features`` and ``clip_embeddings``) at batch 1 and batched, paper-size configs with random
   weights, beside CLMR's SampleCNN on the same audio; medians of ``--repeats`` after warm-up. Each
   model runs as variants: ``plain`` (eager, as built), ``fast`` (``mart_upstream.frozen.for_inference``,
   what the embedding tools load) and ``onnx`` (exported with ``mart-export``'s code, run by ONNX Runtime).
2. FLOPs per second of audio (``FlopCounterMode``), the achieved fraction of the machine's float32
   matmul rate (``torch.mm``) and 3x3 convolution rate (the encoders' main operation), both measured in
   the same run, the speed-up over the plain variant and the ratio to the faster SampleCNN variant.
3. Time and peak memory for single inputs of ``--lengths`` seconds (10 s to 1 h), each in a fresh
   process, for ``--length-variants``; checks that time grows linearly and working memory stays flat.
4. Pretraining throughput (clips/s of the real training step: augmentation, forward, backward, Adam,
   ``after_optimizer_step``; beside it the bare forward + backward + Adam step timed before) with the
   paper configs and ``configs/*_cpu.yaml``, as ``--train-variants`` (eager, channels-last, compile, ...)
   side by side.

Writes ``DIR/speed.json`` and ``DIR/speed.md`` and prints the tables; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List

import torch

from mart_upstream.argtypes import comma_list
from mart_upstream.distributed import require_cuda
from mart_upstream.errors import UsageError

from .subjects import ALL_MODELS, LENGTH_PATHS, PATHS, VARIANTS
from .training import TRAIN_CONFIGS, TRAIN_LOOPS, TRAIN_VARIANTS

PROG = "mart-bench speed"
SECTIONS = ("throughput", "lengths", "training")
FULL_LENGTHS = (10.0, 60.0, 600.0, 3600.0)
QUICK_LENGTHS = (10.0, 60.0, 600.0)
QUICK_REPEATS = 3
QUICK_TRAIN_STEPS = 2


def _csv(kind):
    def parse(text: str) -> List:
        try:
            items = comma_list(text, kind)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return items

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Embedding and pretraining throughput, FLOPs against the machine's matmul rate, and time "
                     "and memory against input length of the encoders, beside CLMR's SampleCNN.")
    p.add_argument("--out", required=True, help="folder for speed.json and speed.md")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", type=_csv(str), default=list(ALL_MODELS),
                   help=f"comma-separated, from {','.join(ALL_MODELS)} (default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"lengths {','.join(f'{x:g}' for x in QUICK_LENGTHS)} s (no 1 h), at most {QUICK_REPEATS} "
                   f"repeats and {QUICK_TRAIN_STEPS} training steps")
    p.add_argument("--tiny", action="store_true",
                   help="narrow, short model configs (to test the benchmark itself; not paper-size numbers)")
    p.add_argument("--sections", type=_csv(str), default=list(SECTIONS),
                   help=f"which parts to run (default: {','.join(SECTIONS)})")
    p.add_argument("--variants", type=_csv(str), default=list(VARIANTS),
                   help=f"how the models run in the throughput section, from {','.join(VARIANTS)} (default: all; "
                   "onnx needs pip install -e .[onnx] and is skipped with a note without it)")
    p.add_argument("--length-variants", type=_csv(str), default=["fast"],
                   help="variants of the time-and-memory section (default: fast, what the embedding tools use; "
                   "plain,fast for both; onnx is not run there)")
    g = p.add_argument_group("embedding throughput and FLOPs")
    g.add_argument("--clip-seconds", type=float, default=10.0, help="length of each clip")
    g.add_argument("--batch", type=int, default=16, help="clips in the batched measurement (also batch 1)")
    g.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is reported)")
    g.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    g.add_argument("--matmul-size", type=int, default=None,
                   help="n of the n x n float32 torch.mm whose rate is the reference (default 2048, CUDA 8192)")
    g = p.add_argument_group("time and memory against length")
    g.add_argument("--lengths", type=_csv(float), default=None,
                   help="input lengths in seconds (default 10,60,600,3600; --quick: 10,60,600)")
    g.add_argument("--repeat-max-seconds", type=float, default=60.0,
                   help="inputs up to this length are timed --repeats times, longer ones once")
    g.add_argument("--warmup-seconds", type=float, default=10.0, help="length of the warm-up call before timing")
    g.add_argument("--linear-max", type=float, default=1.5,
                   help="time per audio second may vary by this factor across lengths")
    g.add_argument("--linear-from", type=float, default=60.0,
                   help="lengths from which the linear check applies (shorter ones pay a whole chunk)")
    g.add_argument("--flat-max", type=float, default=0.2,
                   help="working memory may grow by this fraction from the second-longest to the longest input")
    g.add_argument("--length-reference", action="store_true", help="also run SampleCNN in this section")
    g.add_argument("--length-paths", type=_csv(str), default=list(PATHS),
                   help=f"embedding paths of this section, from {','.join(LENGTH_PATHS)} (default: "
                   f"{','.join(PATHS)}; clip-kept: the clip path as before its window summaries streamed, every "
                   "window's vector kept and the input padded, to compare memory before/after)")
    g = p.add_argument_group("pretraining throughput")
    g.add_argument("--train-batch", type=int, default=None,
                   help="batch size for every setup (default: the config's: 48 paper, run.batch_size of *_cpu.yaml)")
    g.add_argument("--train-warmup", type=int, default=1, help="untimed training steps first")
    g.add_argument("--train-steps", type=int, default=3, help="timed training steps (median reported)")
    g.add_argument("--train-loops", type=_csv(str), default=list(TRAIN_LOOPS),
                   help="steploop: the real training step (augmentation, forward, backward, Adam, "
                   "after_optimizer_step); bare: forward, backward and Adam only, as this section timed before "
                   f"(default: {','.join(TRAIN_LOOPS)}, side by side)")
    g.add_argument("--train-variants", type=_csv(str), default=["eager"],
                   help=f"from {','.join(TRAIN_VARIANTS)} (default: eager); several are printed side by side")
    g.add_argument("--train-configs", type=_csv(str), default=list(TRAIN_CONFIGS),
                   help=f"from {','.join(TRAIN_CONFIGS)}: the paper defaults and/or configs/<model>_cpu.yaml")
    p.add_argument("--probe-timeout", type=float, default=3600.0,
                   help="seconds after which one isolated measurement is abandoned")


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def _settle(args) -> None:
    """Apply --quick and the defaults that depend on other arguments."""
    if args.lengths is None:
        args.lengths = list(QUICK_LENGTHS if args.quick else FULL_LENGTHS)
    if args.quick:
        args.repeats = min(args.repeats, QUICK_REPEATS)
        args.train_steps = min(args.train_steps, QUICK_TRAIN_STEPS)
    if args.matmul_size is None:
        args.matmul_size = 8192 if args.device == "cuda" else 2048


def run(args) -> int:
    try:
        require_cuda(args.device)
    except UsageError as e:
        return _fail(str(e))
    unknown = [m for m in args.models if m not in ALL_MODELS]
    if unknown:
        return _fail(f"unknown model(s) {unknown}; choose from {','.join(ALL_MODELS)}")
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        return _fail(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    for flag, asked, known in (("--train-loops", args.train_loops, TRAIN_LOOPS),
                               ("--train-variants", args.train_variants, tuple(TRAIN_VARIANTS)),
                               ("--train-configs", args.train_configs, TRAIN_CONFIGS)):
        bad = [x for x in asked if x not in known]
        if bad:
            return _fail(f"{flag}: unknown {bad}; choose from {','.join(known)}")
    if "training" in args.sections and any(v.startswith("compile") for v in args.train_variants):
        from mart_upstream.errors import MartError
        from mart_upstream.train.speedups import check_compile_possible

        try:
            check_compile_possible("default", torch.device(args.device))
        except MartError as e:
            return _fail(f"--train-variants compile: {e}")
    bad = [p for p in args.length_paths if p not in LENGTH_PATHS]
    if bad:
        return _fail(f"--length-paths: unknown {bad}; choose from {','.join(LENGTH_PATHS)}")
    bad = [v for v in args.variants + args.length_variants if v not in VARIANTS]
    if bad:
        return _fail(f"unknown variant(s) {bad}; choose from {','.join(VARIANTS)}")
    if min(args.batch, args.repeats, args.train_steps) < 1 or min(args.lengths or [1]) <= 0:
        return _fail("--batch, --repeats, --train-steps and --lengths must be positive")
    _settle(args)

    from . import report
    from .lengths import checks, run_lengths
    from .measure import conv_gflops, load_average, machine_info, matmul_gflops
    from .samplecnn import SampleCNN, check_size
    from .throughput import relate, run_throughput
    from .training import run_training

    start = time.perf_counter()
    res = {"machine": machine_info(args.device),
           "settings": {k: v for k, v in vars(args).items() if k not in ("func", "command")}}
    if "samplecnn" in args.models:
        res["samplecnn_params"] = check_size(SampleCNN())
        print(f"SampleCNN: {res['samplecnn_params']:,} parameters", file=sys.stderr)
    print(f"float32 matmul {args.matmul_size}x{args.matmul_size} and 3x3 convolution 64->64 ...", file=sys.stderr)
    mm = {"size": args.matmul_size, "gflops_start": matmul_gflops(args.device, args.matmul_size)}
    conv = {"shape": [1, 64, 64, 1024], "gflops_start": conv_gflops(args.device)}
    res["matmul"], res["conv"] = mm, conv
    print(f"  {mm['gflops_start']:.1f} and {conv['gflops_start']:.1f} GFLOP/s", file=sys.stderr)
    if "throughput" in args.sections:
        res["throughput"] = run_throughput(args)
    if "lengths" in args.sections:
        res["lengths"] = run_lengths(args)
        res["length_checks"] = checks(res["lengths"], args.linear_max, args.flat_max, args.linear_from)
    if "training" in args.sections:
        res["training"] = run_training(args)
    mm["gflops_end"] = matmul_gflops(args.device, args.matmul_size)
    conv["gflops_end"] = conv_gflops(args.device)
    for rate in (mm, conv):
        rate["gflops"] = max(rate["gflops_start"], rate["gflops_end"])
    # Fractions of the rates against the better of the two measurements (the machine's rate when it
    # was least shared).
    relate(res.get("throughput", []), {"matmul": mm["gflops"], "conv": conv["gflops"]})
    res["machine"]["load_average_end"] = load_average()
    res["elapsed_s"] = time.perf_counter() - start
    md = report.write(res, args.out)
    print(md)
    return 0
