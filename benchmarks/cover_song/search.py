"""Every version as a query against all others: exact cosine ranking, or a FAISS index for large sets.

* ``exact``: similarities in blocks of queries, full rankings with pessimistic ties (MIREX values).
* ``faiss``: an inner-product IVF index (``faiss-cpu``) over L2-normalised vectors, top-K per query;
  metrics from truncated rankings are bounds (see ``metrics.metrics_from_relevance``).
``auto`` picks ``exact`` up to ``EXACT_MAX`` items.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from mart_upstream.errors import TaskError
from mart_upstream.tasks.metrics import metrics_from_relevance

EXACT_MAX = 20000  # items up to which ``auto`` ranks exactly
QUERY_BLOCK = 512  # queries per similarity block


@dataclass
class FaissConfig:
    top_k: int = 100  # ranked list length per query
    nlist: Optional[int] = None  # IVF cells; default 4 sqrt(N)
    nprobe: int = 64  # cells visited per query (recall vs latency: see `mart-cover-song scale`)
    seed: int = 0


def normalise(emb: np.ndarray) -> np.ndarray:
    """[N, D] -> float32 rows of unit length (zero rows stay zero); refuses NaN/Inf."""
    e = np.asarray(emb, dtype=np.float32)
    if e.ndim != 2 or len(e) == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings hold NaN or infinite values")
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return np.ascontiguousarray(e / np.where(n == 0, 1.0, n))


def exact_relevance(emb: np.ndarray, works: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """-> relevance of each query's full ranking [N, N-1] (ties pessimistic), correct items per query [N]."""
    e = normalise(emb)
    works = np.asarray(works)
    n = len(works)
    if n < 2:
        raise ValueError(f"need at least 2 items to rank, got {n}")
    rel = np.zeros((n, n - 1), dtype=bool)
    for s in range(0, n, QUERY_BLOCK):
        sim = e[s : s + QUERY_BLOCK].astype(np.float64) @ e.T.astype(np.float64)
        for j, q in enumerate(range(s, min(s + QUERY_BLOCK, n))):
            others = np.concatenate([np.arange(q), np.arange(q + 1, n)])
            r = works[others] == works[q]
            order = np.lexsort((r.astype(int), -sim[j, others]))  # descending, incorrect first on ties
            rel[q] = r[order]
    return rel, rel.sum(axis=1)


def build_faiss_index(e: np.ndarray, cfg: FaissConfig):
    import faiss  # faiss-cpu

    n, d = e.shape
    nlist = cfg.nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))  # faiss wants >= 39 points per cell
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = cfg.seed
    index.train(e)
    index.add(e)
    index.nprobe = min(cfg.nprobe, nlist)
    return index


def faiss_search(index, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids, scores


def faiss_relevance(emb: np.ndarray, works: Sequence, cfg: FaissConfig) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """-> truncated relevance [N, top_k], correct items per query [N], timing info."""
    e = normalise(emb)
    works = np.asarray(works)
    n = len(works)
    t0 = time.perf_counter()
    index = build_faiss_index(e, cfg)
    t1 = time.perf_counter()
    k = min(cfg.top_k + 1, n)
    ids, _ = faiss_search(index, e, k)
    t2 = time.perf_counter()
    rel = np.zeros((n, k - 1), dtype=bool)
    for q in range(n):
        row = [i for i in ids[q] if i != q and i >= 0][: k - 1]  # drop the query itself, empty slots (-1)
        rel[q, : len(row)] = works[row] == works[q]
    _, counts = np.unique(works, return_inverse=True)
    per_work = np.bincount(counts)
    return rel, per_work[counts] - 1, {"build_s": t1 - t0, "query_ms": 1000 * (t2 - t1) / n}


def evaluate(emb: np.ndarray, works: Sequence, method: str = "auto", faiss_cfg: Optional[FaissConfig] = None,
             k: int = 10) -> Dict:
    """Cover-song metrics for embeddings [N, D] with work labels [N]: map, p_at_10, mr1, top1, n_queries."""
    works = np.asarray(works)
    if len(works) != len(emb):
        raise ValueError(f"{len(emb)} embeddings but {len(works)} work labels")
    if len(works) < 2:
        raise TaskError(f"need at least 2 tracks to search, got {len(works)}")
    if method == "auto":
        method = "exact" if len(works) <= EXACT_MAX else "faiss"
    t0 = time.perf_counter()
    if method == "exact":
        rel, n_rel = exact_relevance(emb, works)
        info = {"query_ms": 1000 * (time.perf_counter() - t0) / len(works)}
    elif method == "faiss":
        rel, n_rel, info = faiss_relevance(emb, works, faiss_cfg or FaissConfig())
    else:
        raise ValueError(f"unknown search method {method!r}: auto, exact or faiss")
    out = metrics_from_relevance(rel, n_rel, k)
    out["search"] = method
    out.update({k_: round(v, 4) for k_, v in info.items()})
    out["ranks_first"] = first_ranks(rel, n_rel).tolist()
    return out


def first_ranks(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Rank of the first correct answer of each scored query (len(ranking) + 1 when none was retrieved)."""
    rel = rel[n_rel > 0]
    return np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, rel.shape[1] + 1)
