"""Retrieval metrics: cover songs (MIREX definitions) and recommendation against sampled negatives.

Cover songs: every version is a query against all other versions of the collection (the query itself removed).
Queries whose work has no other version have no correct answer: they stay in the collection as
distractors but are not scored. Ties in similarity are broken pessimistically (a correct item is
ranked after every incorrect item of equal score), so a constant embedding cannot score above chance.

Recommendation (``rank_against_negatives``, ``hit_at_k``, ``percentile_rank``): each held-out item is
ranked against its own sampled negatives, ties broken the same pessimistic way.
``grouped_bootstrap`` gives a mean with a 95% interval that resamples groups (works, playlists) of
items that are not independent.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def rank_relevance(similarity: np.ndarray, works: Sequence) -> np.ndarray:
    """similarity [N, N] and work labels [N] -> relevance of each query's ranked list, [N, N-1] bool."""
    sim = np.asarray(similarity, dtype=np.float64)
    works = np.asarray(works)
    n = len(works)
    if sim.shape != (n, n):
        raise ValueError(f"similarity must be [{n}, {n}] for {n} items, got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity has NaN or infinite values")
    out = np.zeros((n, n - 1), dtype=bool)
    for q in range(n):
        others = np.delete(np.arange(n), q)
        rel = works[others] == works[q]
        # lexsort: last key is primary -> descending similarity, then incorrect (0) before correct (1)
        order = np.lexsort((rel.astype(int), -sim[q, others]))
        out[q] = rel[order]
    return out


def retrieval_metrics(similarity: np.ndarray, works: Sequence, k: int = 10) -> Dict[str, float]:
    """MAP, precision@k, MR1 (mean rank of the first correct answer, 1-based), top-1 accuracy."""
    rel = rank_relevance(similarity, works)
    return metrics_from_relevance(rel, rel.sum(axis=1), k)


def metrics_from_relevance(rel: np.ndarray, n_relevant: np.ndarray, k: int = 10) -> Dict[str, float]:
    """Metrics from ranked relevance lists [Q, K] and each query's number of correct items in the collection.

    With complete rankings (K = N - 1) these are the MIREX values. With truncated rankings (an
    approximate top-K search) a correct item beyond K adds nothing to AP, and a query with none in its
    top K counts rank K + 1 in MR1: both are then bounds (MAP from below, MR1 from below too).
    """
    rel = np.asarray(rel, dtype=bool)
    n_relevant = np.asarray(n_relevant)
    has = n_relevant > 0
    if not has.any():
        raise ValueError("no query has another version of its work: nothing to evaluate")
    ap = average_precision(rel, n_relevant)[has]
    rel, n_relevant = rel[has], n_relevant[has]
    found = rel.any(axis=1)
    first = np.where(found, rel.argmax(axis=1) + 1, rel.shape[1] + 1)
    return {
        "map": float(ap.mean()),
        "p_at_10" if k == 10 else f"p_at_{k}": float(rel[:, :k].sum(axis=1).mean() / k),
        "mr1": float(first.mean()),
        "top1": float(rel[:, 0].mean()),
        "n_queries": int(has.sum()),
    }


def average_precision(rel: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Average precision of every query from its ranked relevance list [Q, K] and its number of correct
    items in the collection [Q]; NaN for a query with none."""
    rel = np.asarray(rel, dtype=bool)
    n_relevant = np.asarray(n_relevant)
    hits = np.cumsum(rel, axis=1)
    ap = (hits / np.arange(1, rel.shape[1] + 1) * rel).sum(axis=1)
    return np.where(n_relevant > 0, ap / np.maximum(n_relevant, 1), np.nan)


def cosine_similarity(emb: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, N] cosine similarity (zero vectors get similarity 0)."""
    e = np.asarray(emb, dtype=np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norm == 0, 1.0, norm)
    return e @ e.T


def rank_against_negatives(positive: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Scores of held-out items [I] and of each one's negatives [I, K] -> 1-based rank of each item
    among its K + 1 candidates; a negative scoring the same as the item is ranked before it."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    if neg.ndim != 2 or pos.shape != (neg.shape[0],):
        raise ValueError(f"positive must be [I] and negatives [I, K], got {pos.shape} and {neg.shape}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores have NaN or infinite values")
    return 1 + (neg >= pos[:, None]).sum(axis=1)


def hit_at_k(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """1.0 where the item is among the first ``k`` of its ranked list, else 0.0 (mean: the hit ratio HR@k)."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def percentile_rank(ranks: np.ndarray, n_candidates: int) -> np.ndarray:
    """(rank - 1) / (n - 1): 0 at the top of a list of ``n_candidates``, 1 at the bottom, 0.5 expected by
    chance (its mean over items: the mean percentile rank, MPR, lower is better)."""
    if n_candidates < 2:
        raise ValueError(f"a percentile rank needs at least 2 candidates, got {n_candidates}")
    return (np.asarray(ranks, dtype=np.float64) - 1) / (n_candidates - 1)


def grouped_resamples(values, groups: Sequence, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap means that resample whole groups: ``values`` [N] or [R, N] (R rows of per-item values,
    resampled with the same draws of groups, so paired rows stay paired) -> [n_boot] or [R, n_boot]."""
    v = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if v.ndim not in (1, 2) or v.shape[-1:] != groups.shape:
        raise ValueError(f"grouped_bootstrap: {v.shape} values for {groups.shape} group labels")
    if not v.shape[-1]:
        raise ValueError("grouped_bootstrap: no values")
    names, inverse = np.unique(groups, return_inverse=True)
    sums = np.stack([np.bincount(inverse, weights=row, minlength=len(names)) for row in np.atleast_2d(v)])
    counts = np.bincount(inverse, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(names), size=(n_boot, len(names)))
    boot = sums[:, pick].sum(-1) / counts[pick].sum(-1)
    return boot if v.ndim == 2 else boot[0]


def grouped_bootstrap(values: Sequence[float], groups: Sequence, n_boot: int = 2000,
                      seed: int = 0) -> Dict[str, float]:
    """Mean of per-item ``values`` with a 95% bootstrap interval that resamples whole groups (each
    resample: the mean over the items of the drawn groups)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"grouped_bootstrap: {v.shape} values for {np.shape(groups)} group labels")
    lo, hi = np.percentile(grouped_resamples(v, groups, n_boot, seed), [2.5, 97.5])
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "groups": int(len(np.unique(groups))), "n": int(len(v))}
