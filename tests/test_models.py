import math

import pytest
import torch
import torch.nn.functional as F

from mart_upstream.encoders import FCN, fcn4_config, fcn7_config
from mart_upstream.losses import barlow_twins, hierarchical_contrastive, negative_decorrelation, nt_xent
from mart_upstream.models import build_model, get_entry, model_names, tiny_config
from mart_upstream.models.mart import PartWholeTransformer, MartConfig, crop_spans, hierarchical_crop
from mart_upstream.models.pemr import positive_mask


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_fcn4_has_about_370k_parameters_and_512d_output():
    enc = FCN(fcn4_config())
    assert abs(n_params(enc) - 370_000) / 370_000 < 0.02  # PEMR Table 2: FCN-4, 370K
    assert enc(torch.randn(2, 128, 462)).shape == (2, 512)


def test_fcn7_gives_512d_output_and_frame_maps():
    enc = FCN(fcn7_config())
    x = torch.randn(2, 128, 126)
    assert enc(x).shape == (2, 512)
    maps = enc.forward_maps(x)
    assert len(maps) == 7 and maps[-1].shape[0] == 2 and maps[-1].shape[-1] == 512


@pytest.mark.parametrize("parts,levels", [(2, 4), (3, 3), (2, 1)])
def test_hierarchical_crops_are_nested_with_configured_lengths(parts, levels):
    clip = 2 * parts ** (levels - 1) * 5
    x = torch.arange(clip, dtype=torch.float32)[None].repeat(2, 1)
    crops = hierarchical_crop(x, parts, levels)
    spans = crop_spans(clip, parts, levels)
    assert [c.shape[1] for c in crops] == [parts**n for n in range(levels)]
    for n, (c, s) in enumerate(zip(crops, spans)):
        assert c.shape[2] == clip // parts**n
        # the samples of clip m are exactly the span [start, end) of the source
        for m in range(c.shape[1]):
            assert torch.equal(c[0, m], x[0, s[m, 0]:s[m, 1]])
    for n in range(levels - 1):
        whole, part = spans[n], spans[n + 1]
        for m in range(part.shape[0]):
            parent = whole[m // parts]
            assert parent[0] <= part[m, 0] and part[m, 1] <= parent[1]


def test_crop_length_must_split_evenly():
    with pytest.raises(ValueError, match="equal parts"):
        hierarchical_crop(torch.zeros(1, 1001), 2, 4)


def test_part_whole_attention_goes_both_ways():
    torch.manual_seed(0)
    cfg = MartConfig(pwt_layers=1, pwt_head_dim=4, pwt_dropout=0.0)
    pwt = PartWholeTransformer(cfg, d=12).eval()
    levels = [torch.randn(1, 2**n, 12) for n in range(3)]
    base = pwt([x.clone() for x in levels])
    # change one part at level 2: its whole at level 1 must change (eq. 1)
    changed = [x.clone() for x in levels]
    changed[2][0, 3] += 1.0
    out = pwt(changed)
    assert not torch.allclose(out[1][0, 1], base[1][0, 1])
    assert torch.allclose(out[1][0, 0], base[1][0, 0])  # the other whole is untouched in one layer
    # change the whole at level 0: its parts at level 1 must change (eq. 2)
    changed = [x.clone() for x in levels]
    changed[0][0, 0] += 1.0
    out = pwt(changed)
    assert not torch.allclose(out[1][0, 0], base[1][0, 0])
    assert not torch.allclose(out[1][0, 1], base[1][0, 1])


def _sim(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def test_hierarchical_contrastive_matches_hand_computation():
    torch.manual_seed(1)
    b, m, d, tau = 3, 2, 5, 0.7
    lv = [torch.randn(b, 1, d), torch.randn(b, m, d), torch.randn(b, m * m, d)]
    t0 = torch.randn(b, d)
    got = hierarchical_contrastive(lv, t0, m, tau, form="paper")
    total = 0.0
    for i in range(b):
        pw = 0.0
        for n in range(2):
            for w in range(m**n):
                for j in range(m):
                    pw += (1 / m) * math.exp(_sim(lv[n][i, w], lv[n + 1][i, w * m + j]) / tau)
        pos = math.exp(_sim(lv[0][i, 0], t0[i]) / tau)
        neg = sum(math.exp(_sim(lv[0][i, 0], t0[u]) / tau) for u in range(b))
        neg += sum(math.exp(_sim(lv[0][i, 0], lv[0][u, 0]) / tau) for u in range(b) if u != i)
        total += -math.log((pw + pos) / (pw + neg))
    assert got.item() == pytest.approx(total / b, rel=1e-5)
    # without the part-whole term it is the plain contrastive term of eq. (5)
    got_plain = hierarchical_contrastive(lv, t0, m, tau, use_part_whole=False)
    assert got_plain.item() < got.item() + 10  # finite
    assert got_plain.item() != pytest.approx(got.item())


def test_batch_form_of_the_part_whole_term_matches_hand_computation():
    torch.manual_seed(4)
    b, m, d, tau = 3, 2, 5, 0.7
    lv = [torch.randn(b, 1, d), torch.randn(b, m, d), torch.randn(b, m * m, d)]
    t0 = torch.randn(b, d)
    plain = hierarchical_contrastive(lv, t0, m, tau, use_part_whole=False).item()
    pw, count = 0.0, 0
    for n in range(2):  # level n wholes, level n+1 parts; negatives: the other clips' wholes at level n
        level_loss, anchors = 0.0, 0
        for i in range(b):
            for w in range(m**n):
                for j in range(m):
                    part = lv[n + 1][i, w * m + j]
                    pos = math.exp(_sim(part, lv[n][i, w]) / tau)
                    neg = sum(math.exp(_sim(part, lv[n][u, v]) / tau) for u in range(b) if u != i for v in range(m**n))
                    level_loss += -math.log(pos / (pos + neg))
                    anchors += 1
        pw += (1 / m) * level_loss / anchors
    got = hierarchical_contrastive(lv, t0, m, tau, form="batch").item()
    assert got == pytest.approx(plain + pw, rel=1e-5)
    assert hierarchical_contrastive(lv, t0, m, tau).item() == pytest.approx(got)  # the default
    loss, cross = hierarchical_contrastive(lv, t0, m, tau, return_cross=True)
    assert loss.item() == pytest.approx(got) and cross.item() == pytest.approx(plain)


def test_paper_form_is_satisfied_by_clip_collapse_and_batch_form_is_not():
    """Every part and whole of a clip equal, cross-view pairs unrelated: eq. (5) as printed is near
    its minimum, the batch form is not (the cross-view term still counts in full)."""
    torch.manual_seed(5)
    b, m, d, tau = 8, 2, 16, 0.5
    clip = F.normalize(torch.randn(b, 1, d), dim=-1)
    lv = [clip.expand(b, m**n, d).clone() for n in range(4)]
    t0 = torch.randn(b, d)
    paper = hierarchical_contrastive(lv, t0, m, tau, form="paper").item()
    batch = hierarchical_contrastive(lv, t0, m, tau, form="batch").item()
    plain = hierarchical_contrastive(lv, t0, m, tau, use_part_whole=False).item()
    assert paper < 0.1 * plain
    assert batch > plain


def test_nt_xent_matches_hand_computation():
    torch.manual_seed(2)
    b, d, tau = 4, 6, 0.5
    z1, z2 = torch.randn(b, d), torch.randn(b, d)
    z = torch.cat([z1, z2])
    total = 0.0
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        den = sum(math.exp(_sim(z[i], z[k]) / tau) for k in range(2 * b) if k != i)
        total += -math.log(math.exp(_sim(z[i], z[j]) / tau) / den)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(total / (2 * b), rel=1e-5)


def test_barlow_twins_terms():
    torch.manual_seed(3)
    z = torch.randn(64, 8)
    # identical views: cross-correlation diagonal is 1 -> on-diagonal term 0
    assert barlow_twins(z, z, off_diagonal_weight=0.0).item() == pytest.approx(0.0, abs=1e-4)
    assert negative_decorrelation(z, z, weight=1.0).item() == pytest.approx(8.0, rel=1e-3)
    assert negative_decorrelation(z, z).item() == pytest.approx(8.0 * 5e-3, rel=1e-3)  # PEMR eq. (9): λ = 5e-3
    assert negative_decorrelation(z, torch.randn(64, 8), weight=1.0).item() < 1.0


@pytest.mark.parametrize("t,ratio", [(100, 0.1), (37, 0.1), (50, 0.25), (10, 0.0)])
def test_pemr_positive_mask_removes_exactly_the_configured_fraction(t, ratio):
    scores = torch.rand(4, t)
    mask = positive_mask(scores, ratio)
    k = round(ratio * t)
    assert torch.all((mask == 0).sum(1) == k)
    for i in range(4):  # the removed frames are the lowest-scored ones
        removed = scores[i][mask[i] == 0]
        kept = scores[i][mask[i] == 1]
        if k:
            assert removed.max() <= kept.min()


@pytest.mark.parametrize("name", ["mart", "pemr", "simclr"])
def test_loss_is_finite_and_falls_on_a_fixed_batch(name, tiny):
    torch.manual_seed(0)
    model = build_model(name, tiny[name])
    clip = model.clip_samples
    t = torch.linspace(0, 1, clip)
    base = torch.stack([torch.sin(2 * math.pi * (110 * (k + 1)) * t) * (0.2 + 0.1 * k) for k in range(8)])
    views = torch.stack([base, base.roll(37, dims=1) * 0.9], dim=1) + 0.01 * torch.randn(8, 2, clip)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        torch.manual_seed(step)
        out = model(views)
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, (name, losses)


@pytest.mark.parametrize("ablation", [{"use_pwt": False}, {"use_hcl": False}, {"use_pwt": False, "use_hcl": False}])
def test_mart_ablations_train(ablation, tiny):
    model = build_model("mart", {**tiny["mart"], **ablation})
    out = model(torch.randn(2, 2, model.clip_samples))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    has_grad = any(p.grad is not None for p in model.pwt.parameters())
    assert has_grad == ablation.get("use_pwt", True)


@pytest.mark.parametrize("fill", ["mean", "floor", "zero"])
def test_pemr_mask_fill(fill, tiny):
    model = build_model("pemr", {**tiny["pemr"], "mask_fill": fill})
    spec = torch.randn(2, 4, 6) - 6.0
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 0]], dtype=torch.float32)
    out = model.apply_mask(spec, mask)
    assert torch.equal(out[mask[:, None, :].expand_as(spec) == 1], spec[mask[:, None, :].expand_as(spec) == 1])
    removed = out[0, :, 1]
    want = {"zero": torch.zeros(4), "floor": torch.full((4,), math.log(1e-6)), "mean": spec[0].mean(dim=1)}[fill]
    assert torch.allclose(removed, want, atol=1e-5)
    with pytest.raises(ValueError, match="mask_fill"):
        build_model("pemr", {**tiny["pemr"], "mask_fill": 0.0})


@pytest.mark.parametrize("window", ["hop", "paper"])
def test_mart_level_windows_cover_their_hops(window, tiny):
    model = build_model("mart", {**tiny["mart"], "level_window": window})
    for fe in model.level_frontends:
        covers = fe.win_length >= fe.hop_length
        assert covers == (window == "hop" or fe.hop_length <= 256)
        assert fe.mel.mel_scale.n_mels == 128
    # the normalised windows put a steady tone on one scale at every level
    if window == "hop":
        t = torch.arange(16000) / 16000
        tone = torch.sin(2 * math.pi * 1000 * t)[None]
        peaks = [fe(tone).amax(dim=1).median().item() for fe in model.level_frontends]
        assert max(peaks) - min(peaks) < 1.0, peaks


@pytest.mark.parametrize("mode", ["none", "positive", "positive_negative"])
def test_pemr_mask_modes(mode, tiny):
    model = build_model("pemr", {**tiny["pemr"], "frame_mask": mode})
    out = model(torch.randn(4, 2, model.clip_samples))
    assert ("neg" in out) == (mode == "positive_negative")
    out["loss"].backward()


def test_registry_lists_models_and_rejects_unknown():
    assert {"mart", "pemr", "simclr"} <= set(model_names())
    with pytest.raises(KeyError, match="available"):
        build_model("nope")


@pytest.mark.parametrize("name, overrides", [(n, {}) for n in model_names()] + [
    ("mart", {"use_pwt": False}), ("mart", {"use_hcl": False}), ("mart", {"use_pwt": False, "use_hcl": False}),
    ("pemr", {"frame_mask": "none"}), ("pemr", {"frame_mask": "positive"})])
def test_each_model_states_which_parameters_ddp_must_look_for(name, overrides):
    """A model's ``find_unused_parameters`` rule (read by the DDP wrapper) is true exactly when a training
    step leaves some of its parameters without a gradient: DDP stops the run otherwise."""
    entry = get_entry(name)
    model = build_model(name, {**entry.tiny_config(), **overrides})
    torch.manual_seed(0)
    model(0.1 * torch.randn(4, model.num_views, model.clip_samples))["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert bool(unused) == entry.find_unused_parameters(model.config), unused[:3]


@pytest.mark.parametrize("name", model_names())
def test_each_model_states_a_tiny_config(name):
    """The registry hands out copies of the tiny config each model states next to its code."""
    tiny = tiny_config(name)
    assert tiny["clip_samples"] <= 8000 and tiny == get_entry(name).model_cls.tiny_config
    tiny["clip_samples"] = 1
    assert tiny_config(name)["clip_samples"] > 1
    assert build_model(name, tiny_config(name)).clip_samples == tiny_config(name)["clip_samples"]


@pytest.mark.parametrize("fill, upgraded", [(0.0, "zero"), (0.5, None)])
def test_a_format_1_pemr_checkpoint_gets_its_mask_fill_upgraded_by_the_model(tmp_path, tiny, fill, upgraded):
    """Format 1 stored pemr's mask_fill as a number; the checkpoint loader asks the model to upgrade it."""
    from mart_upstream.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

    path = tmp_path / "v1.ckpt"
    save_checkpoint(str(path), build_model("pemr", tiny["pemr"]), "pemr", step=0)
    state = torch.load(path, weights_only=True)
    del state["sha256"]
    state.update(format_version=1, config=dict(state["config"], mask_fill=fill))
    torch.save(state, path)
    if upgraded:
        assert read_checkpoint(str(path))["config"]["mask_fill"] == upgraded
    else:
        with pytest.raises(CheckpointError, match=f"v1.ckpt: pemr checkpoint with mask_fill={fill} cannot be"):
            read_checkpoint(str(path))


@pytest.mark.parametrize("name", model_names())
def test_forward_buffers_are_exactly_what_a_training_step_changes_before_the_optimizer(name, tiny):
    """A skipped batch restores ``forward_buffers`` only: every buffer a training forward pass changes
    must be in it (else a skipped batch leaves a trace), and constant buffers stay out of the per-step copy."""
    cfg = tiny[name]
    if "frontend" in cfg or name in ("mart", "pemr", "simclr"):
        cfg = {**cfg, "frontend": {**cfg.get("frontend", {}), "standardise": True}}
    model = build_model(name, cfg).train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    torch.manual_seed(0)
    model(0.1 * torch.randn(4, model.num_views, model.clip_samples))
    declared = {id(b) for b in model.forward_buffers()}
    changed = [n for n, b in model.named_buffers() if not torch.equal(b, before[n])]
    assert changed, "a training forward pass updates BatchNorm statistics"
    assert all(id(dict(model.named_buffers())[n]) in declared for n in changed), changed
    left_out = [n for n, b in model.named_buffers() if id(b) not in declared]
    assert "frontend.mel.mel_scale.fb" in left_out  # constant
    if name in ("byol", "moco"):  # momentum copies change after the optimizer step, not in the forward pass
        assert any(n.endswith("blocks.0.0.weight") for n in left_out), left_out
