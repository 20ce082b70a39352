"""Helpers of the hostile-input tests of mart-embed and its catalogues: a tiny cover set (4 works x 2
versions of 1.5 s), a tiny SimCLR checkpoint, mart-embed and ``mart-cover-song eval --embeddings`` run
in this process."""
import csv
import glob
import json
import os

import numpy as np
import soundfile as sf

from kit import write_checkpoint

SR = 16000
WORKS, VERSIONS = 4, 2


def default_name(work, version):
    return f"w{work}_v{version}.wav"


def write_set(folder, seed=0, name=default_name, scramble=False):
    """A cover set under ``folder``: the versions of a work share a tone, each with its own noise.
    ``scramble``: the second version of each work holds the next work's tone, so the same manifest scores
    lower. -> the manifest's path (``folder/manifest.csv``)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(1.5 * SR)) / SR
    rows = []
    freqs = rng.uniform(150, 1500, WORKS)
    for w in range(WORKS):
        for v in range(VERSIONS):
            freq = freqs[(w + 1) % WORKS if scramble and v == 1 else w]
            x = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.02 * v) * t) + 0.05 * rng.standard_normal(len(t))
            path = os.path.join(folder, name(w, v))
            sf.write(path, x.astype(np.float32), SR, format="WAV")
            rows.append({"work_id": f"w{w}", "version_id": f"v{v}", "path": os.path.basename(path)})
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, fieldnames=["work_id", "version_id", "path"], quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def tiny_checkpoint(path):
    return write_checkpoint(path, "simclr")


def embed(inp, out, ckpt, *extra):
    """``mart-embed`` on ``inp`` into ``out`` -> exit status."""
    from mart_upstream.embed import main

    return main(["--model", f"simclr={ckpt}", "--input", str(inp), "--out", str(out), "--device", "cpu", *extra])


def cover(manifest, emb, out):
    """``mart-cover-song eval --embeddings`` -> (exit status, results.json or None)."""
    from mart_upstream.benchmarks.cover_song.cli import main

    rc = main(["eval", "--manifest", str(manifest), "--embeddings", str(emb), "--search", "exact",
               "--out", str(out)])
    found = glob.glob(os.path.join(str(out), "*", "results.json"))
    if rc != 0 or not found:
        return rc, None
    with open(found[0]) as f:
        return rc, json.load(f)


def scores(result):
    """What a cover evaluation found: MAP and the rank of each query's first cover."""
    return round(result["map"], 6), result["ranks_first"]
