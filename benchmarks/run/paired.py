"""Measurements that can tell two encoders apart on the same data.

* ``grouped_cv``: a linear probe (standardised logistic regression, scikit-learn, or with
  ``probe="svm"`` a linear SVM, the strategies paper's other probe) under repeated
  grouped k-fold cross-validation over *all* clips of a classification task, grouped by work, so
  no work is in training and test of one fold. Every clip gets out-of-fold predictions in each
  repeat; the folds depend only on (labels, groups, seed), so two encoders evaluated with the same
  seed are scored on exactly the same folds.
* ``paired_difference``: the difference of two encoders' per-item scores (clip correctness,
  per-query average precision), averaged, with a 95% bootstrap interval that resamples *works*
  (items of one work move together, since they are not independent).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, label_binarize

from mart_upstream.tasks.metrics import grouped_bootstrap


def work_of(name: str) -> str:
    """Style clip name ``<label>.<work>_<j>.wav`` -> its work ``<label>.<work>``."""
    return re.sub(r"_\d+$", "", os.path.splitext(os.path.basename(name))[0])


def load_scene_embeddings(embed_task_dir: str) -> Dict[str, np.ndarray]:
    """heareval's per-file scene embeddings of every split -> names, X [N, D], labels, groups (sorted by name)."""
    rows = []
    for path in glob.glob(os.path.join(embed_task_dir, "*", "*.embedding.npy")):
        name = os.path.basename(path)[: -len(".embedding.npy")]
        with open(path[: -len("embedding.npy")] + "target-labels.json") as f:
            labels = json.load(f)
        if len(labels) != 1:
            raise ValueError(f"{path}: grouped CV needs one label per clip, got {labels}")
        rows.append((name, np.load(path).astype(np.float64), str(labels[0])))
    if not rows:
        raise ValueError(f"no scene embeddings (*/*.embedding.npy) under {embed_task_dir}")
    rows.sort(key=lambda r: r[0])
    return {"names": np.array([r[0] for r in rows]), "X": np.stack([r[1] for r in rows]),
            "labels": np.array([r[2] for r in rows]), "groups": np.array([work_of(r[0]) for r in rows])}


PROBES = ("logistic", "svm")


def _probe(kind: str, C: float):
    """A standardised linear probe: logistic regression (default) or a linear-kernel SVM (strategies §4:
    "a support vector machine with a linear kernel and a linear logistic regression classifier")."""
    if kind == "svm":
        return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20000))
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))


def grouped_cv(X: np.ndarray, labels: Sequence[str], groups: Sequence[str], folds: int = 5, repeats: int = 3,
               seed: int = 0, C: float = 0.1, probe: str = "logistic") -> Dict:
    """Repeated grouped k-fold linear probe -> per-clip out-of-fold correctness [repeats, N], fold
    accuracies and macro mAP (one-vs-rest average precision of the out-of-fold probabilities; for
    ``probe="svm"``, of the decision values, which rank the same way a probability would)."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    X = np.asarray(X, dtype=np.float64)
    labels, groups = np.asarray(labels), np.asarray(groups)
    classes = np.unique(labels)
    y = np.searchsorted(classes, labels)
    # a small task: at most as many folds as the rarest class has works (at least 2)
    works_per_class = min(len(np.unique(groups[y == c])) for c in range(len(classes)))
    if works_per_class < 2:
        raise ValueError(f"grouped cross-validation needs at least 2 works per class; a class has {works_per_class}")
    folds = min(folds, works_per_class)
    correct = np.zeros((repeats, len(y)))
    fold_acc, maps = [], []
    for r in range(repeats):
        proba = np.zeros((len(y), len(classes)))
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed * 1000 + r)
        for train, test in cv.split(X, y, groups):
            model = _probe(probe, C)
            model.fit(X[train], y[train])
            if probe == "svm":
                d = model.decision_function(X[test])
                d = np.stack([-d, d], axis=1) if d.ndim == 1 else d  # two classes: one decision value
                p = np.full((len(test), len(classes)), d.min() - 1.0)  # a class missing from the fold: last
                p[:, model.classes_] = d
            else:
                p = np.zeros((len(test), len(classes)))
                p[:, model.classes_] = model.predict_proba(X[test])
            proba[test] = p
            fold_acc.append(float((p.argmax(1) == y[test]).mean()))
        correct[r] = proba.argmax(1) == y
        maps.append(float(average_precision_score(label_binarize(y, classes=np.arange(len(classes))), proba,
                                                  average="macro")))
    return {"top1_acc": float(correct.mean()), "mAP": float(np.mean(maps)), "fold_top1_acc": fold_acc,
            "repeat_mAP": maps, "correct": correct.mean(axis=0).tolist(), "folds": folds, "repeats": repeats,
            "seed": seed, "n": int(len(y)), "works": int(len(np.unique(groups))), "probe": probe}


def paired_difference(a: Sequence[float], b: Sequence[float], groups: Sequence, n_boot: int = 2000,
                      seed: int = 0) -> Dict[str, float]:
    """mean(a - b) over items, with a 95% bootstrap interval resampling groups (works)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.shape != np.shape(groups):
        raise ValueError(f"paired_difference: {d.shape[0]} differences for {np.shape(groups)[0]} group labels")
    out = grouped_bootstrap(d, groups, n_boot, seed)
    return {"diff": out.pop("mean"), **out}
