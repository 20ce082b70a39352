"""Grouped cross-validation and paired differences of the offline benchmark."""
import numpy as np
import pytest

from mart_upstream.benchmarks.run import paired, report
from mart_upstream.errors import UsageError


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
    from mart_upstream.tasks.metrics import average_precision

    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    ap = average_precision(rel, rel.sum(axis=1))
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
    assert "yes, above (better)" in text and "| no |" in text
    # a metric where lower is better reads a negative difference as better
    mpr = dict(comps[("mart", "cover MAP")], metric="playlist MPR (lower better)", diff=-0.05)
    assert "yes, below (better)" in "\n".join(report._paired_table([mpr]))
    assert "playlist MPR (lower better) better than its random init (-0.050)" in "\n".join(
        report.verdict({"paired": [dict(mpr, reference="mart (random init)")], "runs": []}))


def test_learning_curve_points_run_from_random_init_to_the_final_step(tmp_path):
    from mart_upstream.benchmarks.run import curve

    assert curve.parse_steps("1000,300, 300") == [300, 1000]
    with pytest.raises(UsageError, match="positive"):
        curve.parse_steps("0,5")
    run_dir = tmp_path / "pemr"
    run_dir.mkdir()
    for s in (300, 1000, 5000):
        (run_dir / f"step_{s}.ckpt").write_bytes(b"x")
    run = {"model": "pemr", "seed": 0, "checkpoint": str(tmp_path / "pemr.ckpt"), "steps": 2000}
    kept = curve.kept_checkpoints(run, [300, 1000, 3000, 5000])
    assert sorted(kept) == [300, 1000]  # 3000 not kept, 5000 beyond the run's last step
    entries_ = curve.entries([run], [300, 1000])
    assert [e.key for e in entries_] == ["pemr-seed0-step300", "pemr-seed0-step1000"]

    def ev(key, row, acc, cmap):
        return {"key": key, "row": row, "style": {"cv": {"correct": [acc] * 4}}, "covers": {"map": cmap}}

    main = [ev("pemr-seed0", "pemr", 0.6, 0.3), ev("pemr-random", "FCN-4 (random)", 0.2, 0.1)]
    points = curve.curves(main, [ev("pemr-seed0-step1000", "x", 0.5, 0.25), ev("pemr-seed0-step300", "x", 0.4, 0.2)],
                          [run], {"pemr": "FCN-4 (random)"})
    assert points[0]["points"] == [(0, 0.2, 0.1), (300, 0.4, 0.2), (1000, 0.5, 0.25), (2000, 0.6, 0.3)]
    text = "\n".join(curve.markdown(points))
    assert "| pemr | 0 | 300 | 0.400 | 0.200 |" in text
    curve.plot(points, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_verdict_says_what_separates():
    X, y, g = _clips()
    names = [f"{lab}.{w}_{i}" for i, (lab, w) in enumerate(zip(y, g))]
    noise = np.random.default_rng(7).normal(size=X.shape)

    def entry(row, key, feats):
        cv = paired.grouped_cv(feats, y, g, seed=0)
        return {"row": row, "key": key, "style": {"cv": dict(cv, names=names, groups=g.tolist())}, "covers": {}}

    entries = [entry("simclr", "simclr-seed0", noise + 0.001), entry(report.random_row("simclr"), "r", noise),
               entry(report.MFCC_ROW, "mfcc", X)]
    result = {"entries": entries, "runs": [{"model": "simclr", "steps": 12, "batch_size": 8}],
              "paired": report.paired_comparisons(entries)}
    text = "\n".join(report.verdict(result))
    assert "MFCC statistics: style top1_acc" in text and "above chance" in text and "(chance 0.250" in text
    assert "simclr (12 steps of batch 8): style top1_acc (grouped CV) not separated from its random init" in text
    assert "'Not separated'" in text


def test_grouped_cv_fits_its_folds_to_small_tasks():
    X, y, g = _clips(n_works=12, per_work=2, classes=4)  # 3 works per class: 3 folds
    res = paired.grouped_cv(X, y, g, repeats=1)
    assert res["folds"] == 3 and len(res["fold_top1_acc"]) == 3
    X, y, g = _clips(n_works=4, per_work=3, classes=4)  # one work per class: nothing to hold out
    with pytest.raises(ValueError, match="at least 2 works per class"):
        paired.grouped_cv(X, y, g)


def test_lead_table_and_verdict_cover_the_recordings_tasks(tmp_path):
    """Soundtrack identification (grouped CV by track) and same-track retrieval join the lead table with
    intervals, the paired differences and the verdict; a model that separates from its random init on the
    soundtrack task is said to, one that does not is not."""
    X, y, g = _clips(n_works=24, per_work=3, classes=3)
    names = [f"{lab}.{w}_{i}" for i, (lab, w) in enumerate(zip(y, g))]
    rng = np.random.default_rng(5)
    noise = rng.normal(size=X.shape)

    def entry(row, key, feats, seed=None, ap=0.5):
        cv = paired.grouped_cv(feats, y, g, seed=0)
        aps = np.clip(ap + rng.normal(scale=0.05, size=len(y)), 0, 1).tolist()
        return {"row": row, "key": key, "seed": seed, "style": {},
                "soundtrack": {"top1_acc": cv["top1_acc"], "mAP": cv["mAP"],
                               "cv": dict(cv, names=names, groups=g.tolist())},
                "tracks": {"map": float(np.mean(aps)), "top1": 0.5, "query_ap": aps, "query_works": g.tolist()}}

    entries = [entry("mart", "mart-seed0", X + 0.5 * noise, 0, ap=0.8), entry("mart", "mart-seed1", X + 0.6 * noise, 1, 0.8),
               entry(report.random_row("mart"), "mart-random", noise, ap=0.5),
               entry(report.MFCC_ROW, "mfcc", X + 0.5 * noise, ap=0.81)]
    lead = report.summary(entries)
    cell = lead[0]["cells"]["soundtrack top1_acc (CV)"]
    assert lead[0]["seeds"] == 2 and cell["ci_low"] < cell["mean"] < cell["ci_high"] and cell["groups"] == 24
    assert lead[1]["cells"]["soundtrack top1_acc (CV)"]["mean"] < 0.5 < cell["mean"]
    paired_ = report.paired_comparisons(entries, ["mart"])
    metrics = {(c["reference"], c["metric"]) for c in paired_}
    assert ("mart (random init)", "soundtrack top1_acc (grouped CV)") in metrics
    assert (report.MFCC_ROW, "same-track MAP") in metrics
    result = {"entries": entries, "paired": paired_, "runs": [], "table": report.table_rows(entries),
              "meta": {"data": "d", "budget": "b", "seeds": [0, 1], "grid": "faster", "grid_points": 1,
                       "cover_tracks": 0, "cover_works": 0, "total_minutes": 1.0}}
    text = report.markdown(result)
    lead_at, details_at = text.index("soundtrack top1_acc (CV)"), text.index("### Details")
    assert lead_at < text.index("Verdict") < details_at < text.index("heareval probe")
    verdict = [line for line in text.splitlines() if line.startswith("- **mart**")][0]
    assert "against its random init: better on soundtrack top1_acc" in verdict
    assert "same-track MAP" in verdict.split("against MFCC")[1]  # within noise of MFCC there
    report.plot(result, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_learning_curves_carry_the_recordings_and_playlist_tasks(tmp_path):
    from mart_upstream.benchmarks.run import curve

    run = {"model": "mart", "seed": 0, "checkpoint": str(tmp_path / "m.ckpt"), "steps": 900}

    def ev(key, row, st, tr, mpr):
        return {"key": key, "row": row, "style": {"cv": {"correct": [0.5] * 4}}, "covers": {"map": 0.1},
                "soundtrack": {"cv": {"correct": [st] * 4}}, "tracks": {"map": tr}, "playlists": {"mpr": mpr}}

    main = [ev("mart-seed0", "mart", 0.45, 0.44, 0.21), ev("mart-random", "mart (random init)", 0.36, 0.32, 0.31)]
    c = curve.curves(main, [ev("mart-seed0-step300", "x", 0.44, 0.39, 0.23)], [run], {"mart": "mart (random init)"})
    assert c[0]["extra"] == [(0, 0.36, 0.32, 0.31), (300, 0.44, 0.39, 0.23), (900, 0.45, 0.44, 0.21)]
    text = "\n".join(curve.markdown(c))
    assert "| soundtrack top1_acc (CV) | same-track MAP | playlist MPR (lower better) |" in text
    assert "| mart | 0 | 300 | 0.500 | 0.100 | 0.440 | 0.390 | 0.230 |" in text
    curve.plot(c, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def _trend_entry(key, correct, groups, mpr=None):
    names = [f"clip{i}" for i in range(len(correct))]
    e = {"key": key, "row": key, "soundtrack": {"cv": {"correct": list(map(float, correct)), "groups": list(groups),
                                                        "names": names}}}
    if mpr is not None:
        e["playlists"] = {"item_percentile": list(map(float, mpr)), "item_playlist": list(groups),
                          "item_track": names}
    return e


def test_curve_trend_measures_the_rise_per_doubling_against_the_random_init():
    from mart_upstream.benchmarks.run import curve

    groups = np.repeat([f"t{i}" for i in range(30)], 4)
    base = np.full(len(groups), 0.4)
    # every item rises by 0.01 per doubling: slope exactly 0.01, no spread, separated at the end
    points = [(250 * 2 ** k, _trend_entry(f"p{k}", base + 0.01 * (k + 1), groups)) for k in range(4)]
    t = curve.trend_of(points, _trend_entry("ref", base, groups), "soundtrack")
    assert [p["step"] for p in t["points"]] == [250, 500, 1000, 2000]
    assert t["slope_per_doubling"] == pytest.approx(0.01) and t["slope_ci"] == pytest.approx([0.01, 0.01])
    assert t["points"][-1]["diff"] == pytest.approx(0.04) and t["prediction"] == "separated at the last point"
    # the same rise on top of a spread over tracks that hides the last point: the line predicts a later step
    spread = np.repeat(np.random.default_rng(0).normal(scale=0.3, size=30), 4)
    spread -= spread.mean()
    noisy = [(s, _trend_entry(e["key"], np.asarray(e["soundtrack"]["cv"]["correct"]) + spread, groups))
             for s, e in points]
    t = curve.trend_of(noisy, _trend_entry("ref", base, groups), "soundtrack")
    assert t["slope_per_doubling"] == pytest.approx(0.01) and t["points"][-1]["ci_low"] < 0 < t["points"][-1]["ci_high"]
    doublings = (t["half_width"] - t["fitted_last"]) / t["slope_per_doubling"]
    assert doublings > 1 and t["predicted_step"] == round(2000 * 2 ** doublings)
    assert f"step {t['predicted_step']:,}" in t["prediction"] and not t["prediction"].startswith("flat")
    # a rise too slow to matter: no step is named beyond 2**10 times the last one, and a slope whose interval
    # contains 0 says so
    slow = [(s, _trend_entry(e["key"], base + spread + 0.0001 * k, groups)) for k, (s, e) in enumerate(points)]
    t = curve.trend_of(slow, _trend_entry("ref", base, groups), "soundtrack")
    assert "predicted_step" not in t and "more than 10 doublings" in t["prediction"]
    wobbly = [(s, _trend_entry(e["key"], base + spread + [0.0, 0.03, -0.02, 0.02][k]
                               + np.repeat(np.random.default_rng(k).normal(scale=0.1, size=30), 4), groups))
              for k, (s, e) in enumerate(points)]
    t = curve.trend_of(wobbly, _trend_entry("ref", base, groups), "soundtrack")
    assert t["slope_ci"][0] < 0 < t["slope_ci"][1]
    assert t["prediction"].startswith("flat") or t["prediction"].startswith("not rising")
    # a falling curve predicts nothing; a point scored on other clips is left out; one point is no trend
    falling = [(s, _trend_entry(e["key"], base + spread - 0.01 * k, groups)) for k, (s, e) in enumerate(points)]
    t = curve.trend_of(falling, _trend_entry("ref", base, groups), "soundtrack")
    assert t["slope_per_doubling"] == pytest.approx(-0.01) and t["prediction"].startswith("not rising")
    other = _trend_entry("x", base, groups)
    other["soundtrack"]["cv"]["names"] = ["other"] * len(groups)
    t = curve.trend_of(points[:2] + [(4000, other)], _trend_entry("ref", base, groups), "soundtrack")
    assert t["to_step"] == 500
    assert curve.trend_of(points[:1], _trend_entry("ref", base, groups), "soundtrack") is None


def test_curve_trend_reads_lower_better_metrics_the_other_way():
    from mart_upstream.benchmarks.run import curve

    groups = np.repeat([f"pl{i}" for i in range(20)], 3)
    base = np.full(len(groups), 0.3)
    ref = _trend_entry("ref", base, groups, mpr=base)
    better = [(300 * 2 ** k, _trend_entry(f"p{k}", base, groups, mpr=base - 0.02 * (k + 1))) for k in range(3)]
    t = curve.trend_of(better, ref, "mpr")
    assert t["slope_per_doubling"] == pytest.approx(-0.02) and t["prediction"] == "separated at the last point"
    worse = [(s, _trend_entry(e["key"], base, groups, mpr=base + 0.05)) for s, e in better]
    assert curve.trend_of(worse, ref, "mpr")["prediction"] == "below the random init at the last point"


def test_curve_trend_runs_over_every_run_and_renders_a_table():
    from mart_upstream.benchmarks.run import curve

    groups = np.repeat([f"t{i}" for i in range(10)], 2)
    base = np.full(len(groups), 0.5)
    run = {"model": "pemr", "seed": 0, "checkpoint": "x/last.ckpt", "steps": 1200}
    main = [dict(_trend_entry("pemr-seed0", base + 0.03, groups), row="pemr"),
            dict(_trend_entry("pemr-random", base, groups), row="FCN-4 (random init)")]
    kept = [_trend_entry("pemr-seed0-step300", base + 0.01, groups), _trend_entry("pemr-seed1-step300", base, groups)]
    trends = curve.trends(main, kept, [run], {"pemr": "FCN-4 (random init)"})
    assert [(p["step"], round(p["diff"], 3)) for p in trends[0]["tasks"][0]["points"]] == [(300, 0.01), (1200, 0.03)]
    text = "\n".join(curve.trend_markdown(trends))
    assert "| task | step 300 | step 1200 | slope per doubling | what the line predicts |" in text
    assert "| soundtrack top1_acc (CV) | +0.010 [+0.010, +0.010] | +0.030 [+0.030, +0.030] | +0.010 [+0.010, +0.010] |" in text


def test_grouped_resamples_draw_the_same_groups_for_every_row():
    from mart_upstream.tasks.metrics import grouped_bootstrap, grouped_resamples

    rng = np.random.default_rng(1)
    groups = np.repeat([f"w{i}" for i in range(12)], 3)
    a, b = rng.normal(size=36), rng.normal(size=36)
    both = grouped_resamples(np.stack([a, b, a + 1.0]), groups, 500, seed=3)
    assert both.shape == (3, 500)
    for row, v in zip(both, (a, b)):  # each row is the resampling grouped_bootstrap makes of it alone
        ci = grouped_bootstrap(v, groups, 500, seed=3)
        assert np.percentile(row, [2.5, 97.5]) == pytest.approx([ci["ci_low"], ci["ci_high"]])
    assert both[2] - both[0] == pytest.approx(np.ones(500))  # paired rows keep their pairing
    with pytest.raises(ValueError, match="values for"):
        grouped_resamples(np.zeros((2, 5)), groups)
