"""The ``s3prl`` console script: s3prl's own runners, with this package's upstreams and downstreams.

    s3prl run_downstream ARGS    s3prl's ``run_downstream.py`` (``-m train|evaluate -u NAME -d TASK ...``)
    s3prl main PROBLEM ARGS      s3prl's problem runner (what ``s3prl-main`` runs)

Before handing over, it applies ``compat.apply()``, adds ``hubconf.ENTRY_POINTS`` to ``s3prl.hub`` (where
``-u NAME`` and ``S3PRLUpstream(NAME)`` look names up) and this package's ``downstream/`` folder to
``s3prl.downstream.__path__`` (where ``-d NAME`` is imported from). s3prl's files are not touched.

For ``run_downstream`` it also checks the names and paths it can check up front, and supplies ``-c``
with the task's own ``config.yaml`` when it is not given. A problem with the user's input, found here or
while s3prl runs (a bad name or option, a task's data, an audio file, a checkpoint: any
:class:`mart_upstream.errors.MartError`), is reported as one line ``s3prl: error: ...``, exit status 2.
Both commands get ``--device cpu`` when none is given and no GPU is available (s3prl defaults to ``cuda``).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import List, Optional, Sequence

from mart_upstream.errors import command

from . import UPSTREAM_NAMES, PluginError

DOWNSTREAM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "downstream")
PROG = "s3prl"


def own_downstreams() -> List[str]:
    return _downstreams([DOWNSTREAM_DIR])


def usage() -> str:
    return f"""usage: {PROG} run_downstream ARGS     train / evaluate a downstream with s3prl's run_downstream
       {PROG} main PROBLEM ARGS        s3prl's problem runner (as s3prl-main), e.g. HearGtzan

upstreams added: {', '.join(UPSTREAM_NAMES)}
downstreams added: {', '.join(own_downstreams())} (a 2-minute smoke run of each: docs/s3prl.md)
'{PROG} run_downstream -h' lists every option and upstream (it loads s3prl: 10-40 s)."""


def register() -> None:
    """Make this package's upstreams and downstreams visible to an unmodified s3prl (idempotent)."""
    from ...quiet import silence_known_noise
    from . import compat
    from .hubconf import ENTRY_POINTS

    silence_known_noise()
    compat.apply()
    import s3prl.downstream
    from s3prl import hub

    for name, fn in ENTRY_POINTS.items():
        if getattr(hub, name, fn) is not fn:
            raise PluginError(f"s3prl already has an upstream named {name}; cannot register ours")
        setattr(hub, name, fn)
    paths = s3prl.downstream.__path__
    if DOWNSTREAM_DIR not in paths:
        own = _downstreams(list(paths))
        clash = sorted(set(own) & set(_downstreams([DOWNSTREAM_DIR])))
        if clash:
            raise PluginError(f"s3prl already has downstreams named {', '.join(clash)}; cannot register ours")
        paths.append(DOWNSTREAM_DIR)


def _downstreams(paths: Sequence[str]) -> List[str]:
    return sorted({d for p in paths if os.path.isdir(p) for d in os.listdir(p)
                   if os.path.isfile(os.path.join(p, d, "expert.py"))})


def downstream_names() -> List[str]:
    import s3prl.downstream

    return _downstreams(list(s3prl.downstream.__path__))


def upstream_names() -> List[str]:
    from s3prl import hub

    return [n for n in hub.options() if n not in UPSTREAM_NAMES]


def check_upstream(name: str) -> None:
    """PluginError naming the upstreams there are unless s3prl's hub (with ours registered) has ``name``."""
    from s3prl import hub

    if not hasattr(hub, name) or name.startswith("_"):
        raise PluginError(
            f"unknown upstream {name!r}; this package's: {', '.join(UPSTREAM_NAMES)}; "
            f"s3prl's: {', '.join(upstream_names())}"
        )


def find_config(downstream: str) -> Optional[str]:
    """The task's config.yaml; None where s3prl's own default (``./downstream/NAME/config.yaml``) exists."""
    if os.path.isfile(f"./downstream/{downstream}/config.yaml"):
        return None
    import s3prl.downstream

    for base in s3prl.downstream.__path__:
        path = os.path.join(base, downstream, "config.yaml")
        if os.path.isfile(path):
            return path
    raise PluginError(f"downstream {downstream} has no config.yaml; pass one with -c")


def _preparse(args: Sequence[str]) -> argparse.Namespace:
    """The few run_downstream options checked here; everything else goes to s3prl untouched."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    for short, long in [("-u", "--upstream"), ("-k", "--upstream_ckpt"), ("-d", "--downstream"),
                        ("-c", "--config"), ("-e", "--past_exp"), ("-p", "--expdir"), ("-n", "--expname")]:
        p.add_argument(short, long)
    p.add_argument("-f", "--upstream_trainable", action="store_true")
    p.add_argument("-a", "--auto_resume", action="store_true")
    p.add_argument("--device")
    p.add_argument("-o", "--override")
    p.add_argument("--hub", default="torch")
    return p.parse_known_args(list(args))[0]


def check_overrides(text: str) -> None:
    """``-o "config.a.b=V,,args.x=W"`` as s3prl's parser needs it: items joined by ``,,``, each one
    ``=`` (values cannot contain one), keys ``config.<path>`` or ``args.<name>``. PluginError otherwise."""
    for item in text.split(",,"):
        key, eq, _ = item.strip().partition("=")
        fields = key.strip().split(".")
        if not eq or "=" in _:
            raise PluginError(f"-o {item.strip()!r}: expected one key=value (items separated by ',,'; "
                              "a value cannot contain '=')")
        if fields[0] not in ("config", "args") or len(fields) < 2 or not all(fields) or (
                fields[0] == "args" and len(fields) != 2):
            raise PluginError(f"-o {item.strip()!r}: the key must be config.<section>.<key> or args.<name>, "
                              f"e.g. config.runner.total_steps=100")


def prepare_run_downstream(args: Sequence[str]) -> List[str]:
    """Check run_downstream arguments; return them with ``-c`` / ``--device`` filled in where missing."""
    args = list(args)
    a = _preparse(args)
    if a.help:
        print(f"upstreams added by mart-upstream: {', '.join(UPSTREAM_NAMES)}\n"
              f"downstreams added by mart-upstream: {', '.join(own_downstreams())} (smoke runs: docs/s3prl.md)\n")
        return args
    if a.override is not None:
        check_overrides(a.override)
    if a.hub != "torch":
        return args
    expdir = a.expdir or f"result/downstream/{a.expname}"
    resuming = bool(a.past_exp) or (a.auto_resume and bool(glob.glob(os.path.join(expdir, "states-*.ckpt"))))
    if a.past_exp and not (os.path.isfile(a.past_exp) or glob.glob(os.path.join(a.past_exp, "states-*.ckpt"))):
        raise PluginError(f"-e {a.past_exp}: no checkpoint there to resume from (expected a states-STEP.ckpt)")
    if not resuming:
        if not a.upstream:
            raise PluginError("no upstream given: -u NAME (see -h for the list)")
        check_upstream(a.upstream)
        if not a.downstream:
            raise PluginError(f"no downstream given: -d NAME; available: {', '.join(downstream_names())}")
        if a.downstream not in downstream_names():
            raise PluginError(f"unknown downstream {a.downstream!r}; "
                              f"available: {', '.join(downstream_names())}")
        if a.upstream in UPSTREAM_NAMES:
            from .hubconf import checkpoint_path

            checkpoint_path(a.upstream, a.upstream_ckpt)  # before s3prl creates the experiment folder
            if a.upstream_trainable:
                raise PluginError(f"upstream {a.upstream} is a frozen feature extractor: "
                                  "-f (fine-tuning) is not supported")
        if a.config is None:
            config = find_config(a.downstream)
            if config is not None:
                args += ["-c", config]
    return args + _device_args(a.device)


def _device_args(device: Optional[str]) -> List[str]:
    """``--device cpu`` to add when none is given and no GPU is there (s3prl defaults to cuda); a CUDA
    device asked for on a machine without one is a PluginError rather than a torch traceback."""
    import torch

    if torch.cuda.is_available():
        return []
    if device is None:
        return ["--device", "cpu"]
    if device.startswith("cuda"):
        raise PluginError(f"--device {device}: no CUDA device here (torch.cuda.is_available() is False); "
                          "use --device cpu or leave --device out")
    return []


def loading_line() -> None:
    """s3prl's import takes 10-40 s before anything else happens: say so at once."""
    print(f"{PROG}: loading s3prl (10-40 s) ...", file=sys.stderr, flush=True)


def run_downstream(args: Sequence[str]) -> None:
    loading_line()
    register()
    args = prepare_run_downstream(args)
    from s3prl import run_downstream as s3prl_run_downstream

    sys.argv = [f"{PROG} run_downstream"] + args
    s3prl_run_downstream.main()


def _option(args: Sequence[str], key: str) -> Optional[str]:
    """The value of ``--key VALUE`` or ``--key=VALUE`` in a problem runner's arguments, else None."""
    for i, arg in enumerate(args):
        if arg == key:
            return args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1]
    return None


def run_problem(args: Sequence[str]) -> None:
    loading_line()
    register()
    from s3prl import problem

    available = sorted(n for n in dir(problem)
                       if not n.startswith("_") and isinstance(getattr(problem, n), type))
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {PROG} main PROBLEM [-h] [--key.sub VALUE ...]\nproblems: {', '.join(available)}")
        return
    if args[0] not in available:
        raise PluginError(f"unknown problem {args[0]!r}; available: {', '.join(available)}")
    name, trainable = _option(args, "--build_upstream.name"), _option(args, "--build_model.upstream_trainable")
    if name is not None:
        check_upstream(name)
        if name in UPSTREAM_NAMES and str(trainable).lower() in ("true", "1", "yes"):
            raise PluginError(f"upstream {name} is a frozen feature extractor: "
                              "upstream_trainable is not supported")
    args = list(args) + _device_args(_option(args, "--device"))
    import joblib
    from s3prl import main as s3prl_main

    sys.argv = [f"{PROG} main"] + args
    # s3prl's HEAR problems resample their corpus in joblib worker processes, which would not see
    # compat's torchaudio I/O; threads do.
    with joblib.parallel_backend("threading"):
        s3prl_main.main()


@command(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command_name, rest = argv[0], argv[1:]
    commands = {"run_downstream": run_downstream, "main": run_problem}
    if command_name not in commands:
        raise PluginError(f"unknown command {command_name!r}; use run_downstream or main")
    commands[command_name](rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
