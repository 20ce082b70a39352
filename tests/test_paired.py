"""Grouped cross-validation and paired differences of the offline benchmark."""
import numpy as np
import pytest

from benchmarks.offline import paired, report


def _clips(n_works=40, per_work=4, classes=4, dim=16, signal=3.0, seed=0):
    rng = np.random.default_rng(seed)
    labels, groups, X = [], [], []
    for w in range(n_works):
        c = w % classes
        centre = rng.normal(size=dim)  # every work has its own centre: clips of one work are alike
        for j in range(per_work):
            x = centre + rng.normal(scale=0.3, size=dim)
            x[c] += signal
            X.append(x)
            labels.append(f"class{c}")
            groups.append(f"class{c}.work{w}")
    return np.array(X), np.array(labels), np.array(groups)


def test_work_of_strips_the_excerpt_index():
    assert paired.work_of("bach_chorale.bwv10_7_1.wav") == "bach_chorale.bwv10_7"
    assert paired.work_of("x/trecento.some_song_0.wav") == "trecento.some_song"


def test_grouped_cv_separates_signal_from_noise_on_the_same_folds():
    X, y, g = _clips()
    good = paired.grouped_cv(X, y, g, seed=3)
    noise = paired.grouped_cv(np.random.default_rng(1).normal(size=X.shape), y, g, seed=3)
    assert good["top1_acc"] > 0.7 and good["mAP"] > 0.7
    assert noise["top1_acc"] < 0.45  # chance is 0.25
    assert len(good["correct"]) == len(y) and len(good["fold_top1_acc"]) == 15
    # same seed -> same folds -> identical results; the folds never split a work
    assert paired.grouped_cv(X, y, g, seed=3)["correct"] == good["correct"]


def test_grouped_cv_keeps_works_out_of_their_training_folds():
    """A feature that identifies the work but not the class helps only if a work leaks across folds."""
    rng = np.random.default_rng(0)
    X, y, g = _clips(signal=0.0)
    works = np.unique(g, return_inverse=True)[1]
    onehot = np.eye(works.max() + 1)[works] * 5.0
    res = paired.grouped_cv(np.hstack([X, onehot]) + rng.normal(scale=0.01, size=(len(y), X.shape[1] + onehot.shape[1])),
                            y, g, seed=0)
    assert res["top1_acc"] < 0.45


def test_paired_difference_interval():
    g = np.repeat(np.arange(30), 4)
    a = np.r_[np.ones(60), np.zeros(60)]
    d = paired.paired_difference(a, a, g)
    assert d["diff"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0
    rng = np.random.default_rng(0)
    better = (rng.random(120) < 0.8).astype(float)
    worse = (rng.random(120) < 0.4).astype(float)
    d = paired.paired_difference(better, worse, g)
    assert d["ci_low"] > 0 and d["ci_low"] < d["diff"] < d["ci_high"] and d["groups"] == 30
    with pytest.raises(ValueError, match="group labels"):
        paired.paired_difference(better, worse, g[:10])


def test_per_query_ap():
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    ap = paired.per_query_ap(rel)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and np.isnan(ap[1]) and ap[2] == pytest.approx(0.5)


def test_paired_comparisons_name_separated_and_unseparated_models():
    X, y, g = _clips()
    names = [f"{w}_{i}" for i, w in enumerate(g)]

    def entry(row, key, seed, feats, ap):
        cv = paired.grouped_cv(feats, y, g, seed=0)
        works = [f"w{i // 4}" for i in range(len(ap))]
        return {"row": row, "key": key, "seed": seed, "style": {"cv": dict(cv, names=names, groups=g.tolist())},
                "covers": {"query_ap": list(ap), "query_works": works}}

    rng = np.random.default_rng(5)
    noise = rng.normal(size=X.shape)
    ap_hi, ap_lo = np.clip(rng.normal(0.6, 0.1, 80), 0, 1), np.clip(rng.normal(0.3, 0.1, 80), 0, 1)
    entries = [entry("mart", "mart-seed0", 0, X, ap_hi), entry("mart", "mart-seed1", 1, X + 0.01 * noise, ap_hi),
               entry("mart (random init)", "mart-random", None, noise, ap_lo),
               entry("pemr", "pemr-seed0", 0, noise + 0.001, ap_lo),
               entry(report.random_row("pemr"), "pemr-random", None, noise, ap_lo)]
    comps = {(c["model"], c["metric"]): c for c in report.paired_comparisons(entries)}
    assert comps[("mart", "style top1_acc (grouped CV)")]["separated"]
    assert comps[("mart", "style top1_acc (grouped CV)")]["diff"] > 0.4
    assert comps[("mart", "cover MAP")]["separated"]
    assert not comps[("pemr", "style top1_acc (grouped CV)")]["separated"]
    assert not comps[("pemr", "cover MAP")]["separated"]
    text = "\n".join(report._paired_table(list(comps.values())))
    assert "yes, above" in text and "| no |" in text
