"""BYOL, MoCo v2 and MelCPC: their losses against hand computations, the momentum updates, MoCo's queue,
which segment MelCPC scores each prediction against, and training runs through mart-pretrain."""
import csv
import math

import pytest
import torch
import torch.nn.functional as F

from kit import tiny_overrides
from mart_upstream.checkpoint import load_pretrained, read_checkpoint
from mart_upstream.config import ConfigError, to_dict
from mart_upstream.embedding import clip_embeddings
from mart_upstream.encoders import cnn5_config
from mart_upstream.losses import byol_loss, cpc_step_losses, moco_loss
from mart_upstream.models import build_model, tiny_config
from mart_upstream.models import melcpc as melcpc_module
from mart_upstream.models.byol import byol_tau
from mart_upstream.train.cli import build_parser, main
from mart_upstream.train.settings import build_settings

FAST = ["augment.p_pitch=0", "data.num_workers=0", "run.log_every=1"]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _views(model, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(b, model.num_views, model.clip_samples, generator=g)


# -- losses ----------------------------------------------------------------------------------------
def test_byol_loss_is_two_minus_two_cosine_without_gradient_to_the_target():
    p = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0]], requires_grad=True)
    z = torch.tensor([[0.0, 3.0, 0.0], [2.0, 4.0, 4.0]], requires_grad=True)
    want = ((2 - 2 * 0.0) + (2 - 2 * 1.0)) / 2  # orthogonal, then parallel
    loss = byol_loss(p, z)
    assert loss.item() == pytest.approx(want)
    loss.backward()
    assert z.grad is None and p.grad is not None
    torch.manual_seed(0)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    hand = sum(2 - 2 * _cos(a[i].tolist(), b[i].tolist()) for i in range(5)) / 5
    assert byol_loss(a, b).item() == pytest.approx(hand, rel=1e-5)
    # the normalised MSE of BYOL eq. (2)
    mse = (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1).mean()
    assert byol_loss(a, b).item() == pytest.approx(mse.item(), rel=1e-5)


def test_moco_loss_matches_hand_computation_with_a_known_queue():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    k = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised inside: (1, 0), (0, 1)
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]])
    tau = 0.2
    total = 0.0
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = _cos(qi, ki)
        negs = [sum(a * b for a, b in zip(qi, n)) for n in queue.tolist()]  # q is a unit vector here
        den = math.exp(pos / tau) + sum(math.exp(x / tau) for x in negs)
        total += -math.log(math.exp(pos / tau) / den)
    assert moco_loss(q, k, queue, tau).item() == pytest.approx(total / 2, rel=1e-6)
    # the keys of the batch are not negatives of each other: only the queue is
    assert moco_loss(q, k, queue[:1], tau).item() != pytest.approx(moco_loss(q, k, queue, tau).item())


def test_cpc_terms_score_each_prediction_against_its_step_with_other_tracks_as_negatives():
    torch.manual_seed(3)
    b, k_steps, d = 3, 2, 4
    pred, target = torch.randn(b, k_steps, d), torch.randn(b, k_steps, d)
    steps = cpc_step_losses(pred, target)  # dot product, τ = 1: eq. (1) as printed
    for k in range(k_steps):
        hand = 0.0
        for i in range(b):
            scores = [float(pred[i, k] @ target[j, k]) for j in range(b)]  # track i's target and the others'
            hand += -math.log(math.exp(scores[i]) / sum(math.exp(s) for s in scores))
        assert steps[k].item() == pytest.approx(hand / b, rel=1e-5)
    # negatives are the other tracks at the same step: another step of the same track plays no part
    moved = target.clone()
    moved[0, 1] += 5.0
    assert cpc_step_losses(pred, moved)[0].item() == pytest.approx(steps[0].item())
    assert cpc_step_losses(pred, moved)[1].item() != pytest.approx(steps[1].item())
    with pytest.raises(ValueError, match="one shape"):
        cpc_step_losses(pred, target[:, :1])


# -- momentum updates ------------------------------------------------------------------------------
def test_byol_tau_follows_the_cosine_schedule_from_base_to_one():
    assert byol_tau(0, 100, 0.996) == pytest.approx(0.996)
    assert byol_tau(50, 100, 0.996) == pytest.approx(0.998)
    assert byol_tau(100, 100, 0.996) == pytest.approx(1.0)
    assert byol_tau(150, 100, 0.996) == pytest.approx(1.0)


@pytest.mark.parametrize("name, online, targets", [
    ("byol", ("encoder", "head"), ("target_encoder", "target_head")),
    ("moco", ("encoder", "head"), ("key_encoder", "key_head")),
])
def test_targets_are_buffers_out_of_the_optimizer_and_in_the_state_dict(name, online, targets):
    model = build_model(name, tiny_config(name))
    param_names = [n for n, _ in model.named_parameters()]
    assert not [n for n in param_names if n.split(".")[0] in targets]
    state = model.state_dict()
    for on, tg in zip(online, targets):
        for n, p in getattr(model, on).named_parameters():
            assert f"{tg}.{n}" in state and torch.equal(state[f"{tg}.{n}"], p.detach())  # starts as a copy
    # a training step moves the online weights only
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in targets and "running" not in k
              and "num_batches" not in k}
    model(_views(model))["loss"].backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("name, total, step, rate", [
    ("byol", 10, 1, 0.996),  # the first update: k = 0, τ_base
    ("byol", 10, 10, byol_tau(9, 10, 0.996)),  # the last update
    ("moco", 10, 1, 0.999),
    ("moco", 10, 10, 0.999),
])
def test_after_optimizer_step_moves_the_target_by_exactly_the_ema(name, total, step, rate):
    torch.manual_seed(1)
    model = build_model(name, tiny_config(name))
    pairs = [("encoder", "target_encoder"), ("head", "target_head")] if name == "byol" else \
        [("encoder", "key_encoder"), ("head", "key_head")]
    with torch.no_grad():  # as an optimizer step would: online and target now differ
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    old = {(o, t, n): (getattr(model, t).get_buffer(n).clone(), p.detach().clone())
           for o, t in pairs for n, p in getattr(model, o).named_parameters()}
    model.after_optimizer_step(step, total)
    for (o, t, n), (target, online) in old.items():
        got = getattr(model, t).get_buffer(n)
        assert torch.allclose(got, rate * target + (1 - rate) * online, atol=1e-6, rtol=0), (t, n)
    for (o, t, n), (_, online) in old.items():  # the online weights are not touched
        assert torch.equal(getattr(model, o).get_parameter(n), online)


def test_byol_target_batchnorm_uses_batch_statistics():
    model = build_model("byol", tiny_config("byol")).train()
    bn = [m for m in model.target_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before = bn.running_mean.clone()
    model(_views(model))
    assert bn.training and not torch.equal(bn.running_mean, before)


def test_byol_trains_on_a_cnn5_encoder():
    enc = to_dict(cnn5_config())
    enc.update(channels=[4, 4, 8, 8, 16])
    model = build_model("byol", dict(tiny_config("byol"), encoder=enc))
    assert model.encoder.cfg.kernel == 5
    out = model(_views(model))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0.0 <= out["loss"].item() <= 8.0  # two terms in [0, 4]
    assert all(p.grad is not None for p in model.parameters())


# -- MoCo's queue ----------------------------------------------------------------------------------
def _sequential_queue(queue, ptr, keys):
    queue = queue.clone()
    for key in keys:
        queue[ptr] = key
        ptr = (ptr + 1) % queue.shape[0]
    return queue, ptr


def test_moco_queue_wraps_around_when_the_batch_does_not_divide_it():
    model = build_model("moco", dict(tiny_config("moco"), queue_size=6, proj_dim=3))
    queue, ptr = model.queue.clone(), 0
    for n in (4, 4, 8, 1):  # 4 then 4 wraps (positions 4, 5, 0, 1); 8 > K keeps the newest 6
        keys = F.normalize(torch.randn(n, 3), dim=1)
        model.enqueue(keys)
        queue, ptr = _sequential_queue(queue, ptr, keys)
        assert torch.equal(model.queue, queue) and int(model.queue_ptr) == ptr
    assert int(model.queue_ptr) == (4 + 4 + 8 + 1) % 6


def test_moco_forward_uses_the_queue_as_negatives_and_the_update_enqueues_the_keys():
    model = build_model("moco", tiny_config("moco"))
    queue = model.queue.clone()
    views = _views(model)
    model.eval()
    out = model(views)  # eval: BatchNorm on running statistics, nothing enqueued
    assert torch.equal(model.queue, queue) and int(model.queue_ptr) == 0
    assert out["loss"].item() == pytest.approx(moco_loss(out["z1"], out["z2"], queue, 0.2).item(), rel=1e-6)
    model.train()
    out = model(views)
    assert out["loss"].item() == pytest.approx(moco_loss(out["z1"], out["z2"], queue, 0.2).item(), rel=1e-6)
    assert torch.equal(model.queue, queue)  # not yet: a skipped batch (no update) must leave no key behind
    out["loss"].backward()
    model.after_optimizer_step(1, 10)  # MoCo Algorithm 1: update, momentum update, then enqueue
    assert torch.allclose(model.queue[:4], F.normalize(out["z2"], dim=1), atol=1e-6)
    assert torch.equal(model.queue[4:], queue[4:]) and int(model.queue_ptr) == 4
    model.after_optimizer_step(2, 10)  # nothing pending: nothing enqueued twice
    assert int(model.queue_ptr) == 4


# -- MelCPC ----------------------------------------------------------------------------------------
def test_melcpc_predicts_the_segments_after_the_context_from_the_context_alone(monkeypatch):
    torch.manual_seed(2)
    model = build_model("melcpc", tiny_config("melcpc")).eval()  # eval: each segment encoded on its own
    c = model.config
    seen = {}

    def spy(pred, target, temperature, similarity):
        seen.update(pred=pred, target=target)
        return cpc_step_losses(pred, target, temperature, similarity)

    monkeypatch.setattr(melcpc_module, "cpc_step_losses", spy)
    views = _views(model)
    out = model(views)
    wav = views[:, 0]
    seg = c.segment_samples
    y = torch.stack([model.head(model.encoder(model.frontend(wav[:, s * seg:(s + 1) * seg]))) for s in range(4)], 1)
    # targets: y_{t+k} for k = 1, 2 after t = 2 context segments
    assert torch.allclose(seen["target"], y[:, 2:4], atol=1e-5)
    # predictions: W_k of the GRU state after the context, computed without the target segments
    c_t = model.gru(y[:, :2])[0][:, -1]
    want = torch.stack([model.predictors[k](c_t) for k in range(2)], 1)
    assert torch.allclose(seen["pred"], want, atol=1e-5)
    assert out["loss"].item() == pytest.approx((out["cpc_k1"] + out["cpc_k2"]).item(), rel=1e-6)  # eq. (3): Σ_k


def test_melcpc_takes_one_crop_and_checks_its_segmentation():
    model = build_model("melcpc", tiny_config("melcpc"))
    assert model.num_views == 1 and model.frontend.standardiser is not None  # §3: standardised input
    with pytest.raises(ValueError, match=r"expected views \[B, 1, T\]"):
        model(torch.zeros(2, 2, model.clip_samples))
    with pytest.raises(ConfigError, match="context_segments \\+ prediction_steps"):
        build_model("melcpc", dict(tiny_config("melcpc"), clip_samples=7000))
    with pytest.raises(ConfigError, match="similarity"):
        build_model("melcpc", dict(tiny_config("melcpc"), similarity="l2"))
    with pytest.raises(ConfigError, match="queue_size"):
        build_model("moco", dict(tiny_config("moco"), queue_size=0))
    with pytest.raises(ConfigError, match="tau_base"):
        build_model("byol", dict(tiny_config("byol"), tau_base=1.5))
    longer = build_model("melcpc", dict(tiny_config("melcpc"), context_segments=3, clip_samples=10000))
    out = longer(_views(longer))
    out["loss"].backward()
    assert set(k for k in out if k.startswith("cpc_k")) == {"cpc_k1", "cpc_k2"}


def test_melcpc_sequence_embedding_summarises_every_segment_of_the_clip(monkeypatch):
    torch.manual_seed(4)
    model = build_model("melcpc", tiny_config("melcpc")).eval()
    seg, h = model.config.segment_samples, model.config.gru_hidden
    wav = 0.1 * torch.randn(2, 5 * seg + 300)  # 6 segments, the last zero padded
    with torch.no_grad():
        emb = model.sequence_embedding(wav)
        padded = F.pad(wav, (0, 6 * seg - wav.shape[1]))
        y = torch.stack([model.head(model.encoder(model.frontend(padded[:, s * seg:(s + 1) * seg])))
                         for s in range(6)], 1)
        c = model.gru(y)[0]  # the GRU over all 6 segments at once (strategies §4)
    assert emb.shape == (2, 2 * h) == (2, model.embedding_dim)
    assert torch.allclose(emb[:, :h], c.mean(1), atol=1e-5)
    assert torch.allclose(emb[:, h:], c.std(1, unbiased=False), atol=1e-5)
    monkeypatch.setattr(melcpc_module, "SEGMENTS_PER_PASS", 4)  # encoded a few segments at a time
    with torch.no_grad():
        assert torch.allclose(model.sequence_embedding(wav), emb, atol=1e-5)
    # the one embedding path (HEAR scene, mart-embed, mart-bench) summarises the whole clip, not a mean
    # over 12 s windows, also for a clip longer than a window, in groups of sounds
    assert wav.shape[1] > model.clip_samples
    assert torch.allclose(clip_embeddings(model, wav), emb, atol=1e-5)
    assert torch.allclose(clip_embeddings(model, wav, max_samples=1), emb, atol=1e-5)
    windowed = clip_embeddings(model, wav, summary="mean")  # asked for: the windows' mean
    assert not torch.allclose(windowed, emb, atol=1e-3)


@pytest.mark.parametrize("name", ["byol", "moco", "melcpc"])
def test_tiny_models_train_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name, tiny_config(name))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    views = _views(model)
    for step in range(1, 3):
        out = model(views)
        assert torch.isfinite(out["loss"]) and out["emb"].shape == (4, out["emb"].shape[1])
        opt.zero_grad()
        out["loss"].backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        model.after_optimizer_step(step, 2)


# -- settings and runs -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, lr, batch", [("byol", 3e-4, 48), ("moco", 3e-4, 48), ("melcpc", 1e-3, 16)])
def test_pretrain_defaults_and_cpu_configs_reach_the_settings(name, lr, batch, tmp_path):
    model_cfg, settings = build_settings(build_parser().parse_args(["--model", name, "--out", str(tmp_path)]))
    assert settings.optim.lr == pytest.approx(lr) and settings.run.batch_size == batch
    model_cfg, settings = build_settings(build_parser().parse_args(["--model", name, "--out", str(tmp_path),
                                                                    "--config", "cpu"]))
    assert model_cfg.frontend.n_mels == 64 == model_cfg.encoder.n_mels
    build_model(name, model_cfg)  # the CPU architecture builds


def test_moco_run_checkpoints_its_queue_and_resumes_exactly(tmp_path):
    def run(out, steps, *extra):
        return main(["--model", "moco", "--demo", "4", "--out", str(out), "--steps", str(steps), "--batch-size", "4",
                     *extra, *FAST, *tiny_overrides("moco")])

    full, part = tmp_path / "full", tmp_path / "part"
    assert run(part, 3) == 0
    model, cfg = load_pretrained(str(part / "last.ckpt"))
    state = read_checkpoint(str(part / "last.ckpt"))["model"]
    assert cfg.queue_size == 16 and int(model.queue_ptr) == (3 * 4) % 16
    assert torch.equal(model.queue, state["queue"]) and torch.equal(model.key_encoder.blocks[0][0].weight,
                                                                   state["key_encoder.blocks.0.0.weight"])
    assert torch.allclose(model.queue[:12].norm(dim=1), torch.ones(12), atol=1e-5)  # 12 real unit keys
    assert clip_embeddings(model, torch.randn(2, 9000)).shape == (2, model.embedding_dim)
    assert run(part, 5, "--resume") == 0
    assert run(full, 5) == 0
    a, b = read_checkpoint(str(full / "last.ckpt")), read_checkpoint(str(part / "last.ckpt"))
    assert a["step"] == b["step"] == 5 and int(b["model"]["queue_ptr"]) == (5 * 4) % 16
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k


def test_melcpc_run_trains_on_one_crop_per_track(tmp_path):
    assert main(["--model", "melcpc", "--demo", "3", "--out", str(tmp_path), "--steps", "2", "--batch-size", "3",
                 *FAST, *tiny_overrides("melcpc")]) == 0
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["cpc_k1"])) and 0.0 <= float(r["pair_top1"]) <= 1.0 for r in rows)
    model, _ = load_pretrained(str(tmp_path / "last.ckpt"))
    emb = clip_embeddings(model, torch.randn(2, 20000))
    assert emb.shape == (2, model.embedding_dim) and torch.isfinite(emb).all()
