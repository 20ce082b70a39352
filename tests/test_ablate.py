"""Varying the augmentation chain: `mart-bench ablate`'s variants (built in, a user's own, bad ones) and `mart-bench run --set`."""
import pytest

from mart_upstream.benchmarks.run import ablate
from mart_upstream.errors import UsageError


def test_the_chain_comes_first_and_variants_keep_their_overrides():
    v = ablate.parse_variants("no-timbre,crop-only", ["soft-gain=augment.p_gain=0.1,augment.p_delay=0"])
    assert list(v) == ["chain", "no-timbre", "crop-only", "soft-gain"]
    assert v["chain"] == [] and "augment.p_pitch=0" not in v["no-timbre"]
    assert {"augment.p_filter=0", "augment.p_gain=0", "augment.p_delay=0"} <= set(v["no-timbre"])
    assert v["soft-gain"] == ["augment.p_gain=0.1", "augment.gain_db=[-6"] or v["soft-gain"][0] == "augment.p_gain=0.1"
    assert all(o.endswith("=0") for o in v["crop-only"]) and len(v["crop-only"]) == 8


@pytest.mark.parametrize("names, custom, words", [
    ("chain,louder", [], "unknown 'louder'"),
    ("chain", ["nothing"], "expected NAME=key=value"),
    ("chain", ["steps=run.steps=10"], "run.steps is not a setting a variant may change"),
    ("chain", ["mine=crop-only,louder"], "'louder' is neither key=value nor a built-in variant"),
    ("crop-only", [], None),
    ("chain", ["crop-only=augment.p_gain=0"], "is taken"),
    ("chain", ["chain=augment.p_gain=0"], "is taken"),
])
def test_bad_variants_are_one_clear_error(names, custom, words):
    if words is None:  # a good one, for contrast
        assert list(ablate.parse_variants(names, custom)) == ["chain", "crop-only"]
        return
    with pytest.raises(UsageError, match=words):
        ablate.parse_variants(names, custom)


def test_a_variant_builds_on_a_built_in_one_and_another_base_comes_first():
    v = ablate.parse_variants("crop-only", ["plain-bt=crop-only,model.frame_mask=none", "fast=crop-only,optim.lr=0.001"],
                              base="crop-only")
    assert list(v) == ["crop-only", "plain-bt", "fast"]  # the chain is not trained when it is not asked for
    assert v["plain-bt"] == ablate.VARIANTS["crop-only"] + ["model.frame_mask=none"]
    assert v["fast"][-1] == "optim.lr=0.001"
    assert list(ablate.parse_variants("", ["fast=optim.lr=0.001"], base="fast")) == ["fast"]
    with pytest.raises(UsageError, match="--base: unknown 'cropped'"):
        ablate.parse_variants("crop-only", [], base="cropped")


def test_settings_for_every_variant_leave_the_budget_alone():
    assert ablate.common_settings(["run.bf16_cpu=false"]) == ["run.bf16_cpu=false"]
    with pytest.raises(UsageError, match="the budget is --steps"):
        ablate.common_settings(["run.steps=10"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        ablate.common_settings(["run.bf16_cpu"])


def test_run_passes_set_values_to_every_pretraining_run_and_names_them_in_the_budget():
    import argparse

    from mart_upstream.benchmarks.run import run

    p = argparse.ArgumentParser()
    run.add_arguments(p)
    args = p.parse_args(["--out", "o", "--models", "mart,pemr", "--set", "augment.p_pitch=0", "--set", "augment.p_gain=0"])
    assert run._models(args) == ["mart", "pemr"]
    assert run._overrides(args, "pemr", ["run.keep_steps=[300]"]) == [
        "run.keep_steps=[300]", "augment.p_pitch=0", "augment.p_gain=0"]
    assert run._settings_text(args) == "; with augment.p_pitch=0 augment.p_gain=0"
    bad = p.parse_args(["--out", "o", "--set", "augment.p_pitch"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        run._models(bad)
