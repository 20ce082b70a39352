"""Cover-song retrieval metrics with the MIREX audio cover song definitions.

Every version is a query against all other versions of the collection (the query itself removed).
Queries whose work has no other version have no correct answer: they stay in the collection as
distractors but are not scored. Ties in similarity are broken pessimistically (a correct item is
ranked after every incorrect item of equal score), so a constant embedding cannot score above chance.
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
