"""FAISS vs exact search on a synthetic catalogue of N unit vectors (works x versions): agreement of the
ranked lists and per-query latency, the numbers behind ``search.EXACT_MAX``."""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from mart_upstream.tasks.metrics import metrics_from_relevance
from .search import FaissConfig, build_faiss_index, faiss_search, normalise


def synthetic_catalogue(n: int, dim: int, versions: int, seed: int, spread: float = 1.2):
    """Works are random directions; each version is its work plus Gaussian noise (``spread`` x the
    work's norm), so retrieval is neither trivial nor hopeless."""
    rng = np.random.default_rng(seed)
    works = np.arange(n) // versions
    centres = rng.standard_normal((works.max() + 1, dim)).astype(np.float32)
    emb = centres[works] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return normalise(emb), works


def _relevance(ids: np.ndarray, q: np.ndarray, works: np.ndarray, k: int) -> np.ndarray:
    rel = np.zeros((len(q), k), dtype=bool)
    for i, qi in enumerate(q):
        row = [j for j in ids[i] if j != qi and j >= 0][:k]
        rel[i, : len(row)] = works[row] == works[qi]
    return rel


def run_scale(n: int, dim: int, n_queries: int, versions: int, seed: int, cfg: FaissConfig) -> Dict:
    emb, works = synthetic_catalogue(n, dim, versions, seed)
    rng = np.random.default_rng(seed + 1)
    q = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    k = cfg.top_k + 1
    # exact: one matrix product per query block, then a full ranking per query (ties pessimistic)
    t0 = time.perf_counter()
    exact_rel, exact_top = [], []
    for s in range(0, len(q), 256):
        block = q[s : s + 256]
        sim = emb[block] @ emb.T
        for i, qi in enumerate(block):
            r = works == works[qi]
            r[qi] = False
            order = np.lexsort((r.astype(int), -sim[i]))
            order = order[order != qi]
            exact_rel.append(r[order])
            exact_top.append(order[: cfg.top_k])
    exact_ms = 1000 * (time.perf_counter() - t0) / len(q)
    exact_rel = np.stack(exact_rel)
    n_rel = exact_rel.sum(axis=1)
    # FAISS: IVF index over the whole catalogue; batched and one-at-a-time latency
    t0 = time.perf_counter()
    index = build_faiss_index(emb, cfg)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = faiss_search(index, emb[q], k)
    faiss_ms = 1000 * (time.perf_counter() - t0) / len(q)
    single = q[: min(100, len(q))]
    t0 = time.perf_counter()
    for qi in single:
        faiss_search(index, emb[qi : qi + 1], k)
    faiss_single_ms = 1000 * (time.perf_counter() - t0) / len(single)
    faiss_rel = _relevance(ids, q, works, cfg.top_k)
    faiss_top = [[j for j in row if j != qi and j >= 0][:10] for row, qi in zip(ids, q)]
    recall = np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(exact_top, faiss_top)])
    top1 = np.mean([len(b) > 0 and a[0] == b[0] for a, b in zip(exact_top, faiss_top)])
    m_exact = metrics_from_relevance(exact_rel, n_rel)
    m_faiss = metrics_from_relevance(faiss_rel, n_rel)
    return {
        "n": n, "dim": dim, "queries": len(q), "versions_per_work": versions, "top_k": cfg.top_k,
        "nprobe": cfg.nprobe, "exact_query_ms": exact_ms, "faiss_query_ms": faiss_ms,
        "faiss_single_query_ms": faiss_single_ms, "faiss_build_s": build_s,
        "recall_at_10": float(recall), "top1_agreement": float(top1),
        "map_exact": m_exact["map"], "map_faiss": m_faiss["map"],
        "p_at_10_exact": m_exact["p_at_10"], "p_at_10_faiss": m_faiss["p_at_10"],
    }
