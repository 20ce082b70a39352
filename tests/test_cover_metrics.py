"""Cover-song metrics against rankings computed by hand."""
import numpy as np
import pytest

from mart_upstream.tasks.metrics import cosine_similarity, rank_relevance, retrieval_metrics


def test_hand_computed_ranking():
    # items: a0 a1 b0 b1 c0 (c has one version: a distractor, never a scored query)
    works = ["a", "a", "b", "b", "c"]
    s = np.array([
        [0, .5, .9, .1, .2],   # a0: b0(x) a1(v) c0 b1 -> first correct at rank 2, AP 1/2
        [.5, 0, .1, .2, .3],   # a1: a0(v) ...      -> rank 1, AP 1
        [.9, .1, 0, .4, .8],   # b0: a0(x) c0(x) b1(v) -> rank 3, AP 1/3
        [.1, .2, .4, 0, .3],   # b1: b0(v)          -> rank 1, AP 1
        [.2, .3, .8, .3, 0],
    ])
    m = retrieval_metrics(s, works)
    assert m["n_queries"] == 4
    assert m["map"] == pytest.approx((0.5 + 1 + 1 / 3 + 1) / 4)
    assert m["mr1"] == pytest.approx((2 + 1 + 3 + 1) / 4)
    assert m["top1"] == pytest.approx(0.5)
    assert m["p_at_10"] == pytest.approx(1 / 10)  # one correct answer per query, all within 10


def test_ap_with_several_versions():
    works = ["a", "a", "a", "b", "b", "b"]
    s = np.zeros((6, 6))
    s[0, [3, 1, 4, 2, 5]] = [5, 4, 3, 2, 1]  # query 0 ranks: b a b a b
    rel = rank_relevance(s, works)
    assert rel[0].tolist() == [False, True, False, True, False]
    ap0 = (1 / 2 + 2 / 4) / 2
    # the other queries see all-equal scores: pessimistic ties rank their 2 correct answers last
    assert rel[1].tolist() == [False, False, False, True, True]
    ap_tied = (1 / 4 + 2 / 5) / 2
    m = retrieval_metrics(s, works)
    assert m["n_queries"] == 6
    assert m["map"] == pytest.approx((ap0 + 5 * ap_tied) / 6)
    assert m["p_at_10"] == pytest.approx(2 / 10)


def test_ties_are_pessimistic():
    works = ["a", "a", "b", "b"]
    m = retrieval_metrics(np.ones((4, 4)), works)
    assert m["top1"] == 0.0 and m["mr1"] == pytest.approx(3.0) and m["map"] == pytest.approx(1 / 3)


def test_oracle_embedding_scores_map_one():
    works = np.repeat(np.arange(5), 3)
    emb = np.eye(5)[works] + 0.01 * np.random.default_rng(0).normal(size=(15, 5))
    m = retrieval_metrics(cosine_similarity(emb), works)
    assert m["map"] == pytest.approx(1.0) and m["top1"] == 1.0 and m["mr1"] == 1.0
    assert m["p_at_10"] == pytest.approx(2 / 10)


def test_errors():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        retrieval_metrics(np.zeros((3, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="must be"):
        retrieval_metrics(np.zeros((3, 2)), ["a", "a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((2, 2), np.nan), ["a", "a"])
