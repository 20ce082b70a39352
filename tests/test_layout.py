"""The README's Layout section against the tree and the model registry: every module it should name is
named, and every file it names exists (as the size table is checked against the models)."""
import os
import re

from mart_upstream.models import all_names

from kit import ROOT


def _layout() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Layout\n\n```\n") + len("## Layout\n\n```\n")
    return text[start : text.index("```\n", start)]


def _entries(folder: str, dirs: bool = True):
    out = []
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
        path = os.path.join(ROOT, folder, name)
        if name.startswith(("_", ".")) or name.endswith(".egg-info"):
            continue
        if name.endswith(".py") or (dirs and os.path.isdir(path) and name != "gtzan_splits"):
            out.append(name if name.endswith(".py") else name + "/")
    return out


def test_layout_names_every_module_of_the_tree():
    block = _layout()
    named = set(re.findall(r"[\w./<>]+", block))
    missing = {folder: [e for e in _entries(folder) if e not in named and e.rstrip("/") + "/" not in named]
               for folder in ("mart_upstream", "mart_upstream/models", "mart_upstream/tasks", "hear_api",
                              "benchmarks")}
    assert not any(missing.values()), f"README Layout does not name: {missing}"


def test_every_file_the_layout_names_exists():
    files = {name for d, _, names in os.walk(ROOT) if "/." not in d and ".venv" not in d for name in names}
    stale = sorted(n for n in re.findall(r"[\w]+\.py", _layout()) if n not in files)
    assert not stale, f"README Layout names files that are not in the tree: {stale}"


def test_every_registered_model_is_served_and_named():
    block = _layout()
    for name in all_names():
        assert os.path.isfile(os.path.join(ROOT, "hear_api", f"{name}.py")), f"hear_api/{name}.py is missing"
        assert re.search(rf"\b{name}\b", block), f"README Layout does not name the model {name}"
