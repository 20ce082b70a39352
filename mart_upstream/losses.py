"""Contrastive and redundancy-reduction objectives.

Every loss takes the local batch and gathers the other ranks' examples itself, so negatives and
batch statistics span the global batch under torchrun.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .distributed import gather_with_grad, local_offset


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR / CLMR): 2B views, each view's positive is its pair, the other 2B-2 are negatives.

    z1, z2: [B, D] local projections. Returns the mean over the local 2B anchors.
    """
    b = z1.shape[0]
    z1n, z2n = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    g1, g2 = gather_with_grad(z1n), gather_with_grad(z2n)  # [N, D] global
    n = g1.shape[0]
    keys = torch.cat([g1, g2], dim=0)  # [2N, D]
    off = local_offset(b)
    idx = torch.arange(b, device=z1.device) + off
    anchors = torch.cat([z1n, z2n], dim=0)  # [2B, D]
    logits = anchors @ keys.t() / temperature  # [2B, 2N]
    self_idx = torch.cat([idx, idx + n])
    pos_idx = torch.cat([idx + n, idx])
    logits[torch.arange(2 * b, device=z1.device), self_idx] = float("-inf")
    return F.cross_entropy(logits.float(), pos_idx)


def part_whole_term(
    levels: Sequence[torch.Tensor], parts_per_whole: int, temperature: float
) -> torch.Tensor:
    """MART eq. (3)-(4): L^pw_b = sum_i lambda^i sum_{wholes at i} sum_{their parts} exp(sim/τ).

    levels[i]: normalised projections [B, M^i, D] of level i; part j of whole m is index m*M + j.
    lambda^i = len(part) / len(whole) = 1/M for equal-split cropping (eq. 4). Returns [B].
    """
    m = parts_per_whole
    total = levels[0].new_zeros(levels[0].shape[0])
    for whole, part in zip(levels[:-1], levels[1:]):
        b, w, d = whole.shape
        parts = part.view(b, w, m, d)  # [B, M^i, M, D]
        sim = (whole.unsqueeze(2) * parts).sum(-1) / temperature  # [B, M^i, M]
        lam = 1.0 / m  # MART eq. (4)
        total = total + lam * sim.exp().sum(dim=(1, 2))
    return total


def part_whole_infonce(levels: Sequence[torch.Tensor], parts_per_whole: int, temperature: float) -> torch.Tensor:
    """Part-whole attraction with in-batch negatives (the ``hcl="batch"`` form of MART's L^pw).

    Keeps eq. (3)-(4)'s idea (every part is pulled towards its whole, level i weighted by λ^i = 1/M)
    but as InfoNCE: the anchor is a part at level i+1, its positive its whole at level i, and the
    negatives are the wholes at level i of the *other* clips of the (global) batch. The other wholes
    of the anchor's own clip are left out of the denominator (they are neither positive nor
    negative). Unlike the printed form, this cannot be satisfied by mapping every part and whole
    of a clip to the same point. levels[i]: normalised [B, M^i, D]. Returns a scalar.
    """
    m = parts_per_whole
    total = levels[0].new_zeros(())
    for whole, part in zip(levels[:-1], levels[1:]):
        b, w, d = whole.shape
        keys = gather_with_grad(whole)  # [N, W, D]
        n = keys.shape[0]
        anchors = part.reshape(b * w * m, d)
        logits = anchors @ keys.reshape(n * w, d).t() / temperature  # [B*W*M, N*W]
        clip = (torch.arange(b, device=whole.device) + local_offset(b)).repeat_interleave(w * m)
        own = torch.arange(w, device=whole.device).repeat_interleave(m).repeat(b)
        key_clip = torch.arange(n, device=whole.device).repeat_interleave(w)
        same_clip = key_clip[None, :] == clip[:, None]
        target = clip * w + own
        logits = logits.masked_fill(same_clip & (torch.arange(n * w, device=whole.device)[None, :] != target[:, None]),
                                    float("-inf"))
        total = total + (1.0 / m) * F.cross_entropy(logits.float(), target)  # λ^i = 1/M, MART eq. (4)
    return total


HCL_FORMS = ("batch", "paper")


def hierarchical_contrastive(
    s_hat: Sequence[torch.Tensor],
    s_tilde0: torch.Tensor,
    parts_per_whole: int,
    temperature: float = 0.5,
    use_part_whole: bool = True,
    form: str = "batch",
    return_cross: bool = False,
):
    """MART eq. (5)-(6).

    s_hat: per-level projections of the part-whole transformer outputs, [B, M^i, D] (level 0 first).
    s_tilde0: projection of the whole clip's encoder output from the second view, [B, D].
    form="paper" (eq. 5 as printed): L_b = -log((L^pw_b + exp(sim(ŝ⁰_b, s̃⁰_b)/τ)) / (L^pw_b + L^neg_b)),
    L^neg_b = Σ_u exp(sim(ŝ⁰_b, s̃⁰_u)/τ) + Σ_{u≠b} exp(sim(ŝ⁰_b, ŝ⁰_u)/τ) over the global batch.
    L^pw (up to Σ λ M^(i+1) e^(1/τ)) sits in numerator and denominator without negatives, so the
    loss falls to 0 when parts and wholes of a clip agree, whatever the cross-view pair does.
    form="batch" (default): the cross-view term alone (L^pw = 0 in eq. 5) plus
    ``part_whole_infonce``, the part-whole attraction with in-batch negatives.
    use_part_whole=False drops L^pw (the "w/o HCL" ablation, MART Table 4).
    return_cross=True returns (loss, the cross-view term alone, detached) for the training log.
    """
    if form not in HCL_FORMS:
        raise ValueError(f"hierarchical_contrastive: form must be one of {HCL_FORMS}, got {form!r}")
    levels = [F.normalize(x, dim=-1) for x in s_hat]
    w0 = levels[0][:, 0]  # ŝ⁰ [B, D]
    t0 = F.normalize(s_tilde0, dim=-1)  # s̃⁰ [B, D]
    b = w0.shape[0]
    idx = torch.arange(b, device=w0.device) + local_offset(b)
    gw, gt = gather_with_grad(w0), gather_with_grad(t0)
    # Work in log space: every term is exp(x), so log-sum-exp keeps small τ stable.
    to_tilde = w0 @ gt.t() / temperature  # [B, N]
    to_hat = w0 @ gw.t() / temperature  # [B, N]
    to_hat = to_hat.scatter(1, idx[:, None], float("-inf"))  # u ≠ b
    pos = to_tilde.gather(1, idx[:, None]).squeeze(1)
    log_neg = torch.logsumexp(torch.cat([to_tilde, to_hat], dim=1), dim=1)  # eq. (6)
    cross = (log_neg - pos).mean()  # eq. (5) with L^pw = 0
    if use_part_whole and form == "paper":
        log_pw = torch.log(part_whole_term(levels, parts_per_whole, temperature))
        loss = (torch.logaddexp(log_pw, log_neg) - torch.logaddexp(log_pw, pos)).mean()  # eq. (5)
    elif use_part_whole and len(levels) > 1:
        loss = cross + part_whole_infonce(levels, parts_per_whole, temperature)
    else:
        loss = cross
    return (loss, cross.detach()) if return_cross else loss


def _standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    z = gather_with_grad(z)
    return (z - z.mean(0)) / (z.std(0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Barlow-Twins cross-correlation over the (global) batch: [D, D]."""
    a, b = _standardise(z1.float()), _standardise(z2.float())
    return a.t() @ b / a.shape[0]


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, off_diagonal_weight: float = 5e-3) -> torch.Tensor:
    """PEMR eq. (8): Σ_i (1 - U_ii)² + λ Σ_{i≠j} U_ij²."""
    u = cross_correlation(z1, z2)
    on = (1 - torch.diagonal(u)).pow(2).sum()
    off = u.pow(2).sum() - torch.diagonal(u).pow(2).sum()
    return on + off_diagonal_weight * off


def negative_decorrelation(z1: torch.Tensor, z_neg: torch.Tensor, weight: float = 5e-3) -> torch.Tensor:
    """PEMR eq. (9): λ Σ_i V_ii² with V the cross-correlation of Z' and Z''_neg (λ = 5e-3, as in eq. 8)."""
    return weight * torch.diagonal(cross_correlation(z1, z_neg)).pow(2).sum()


SIMILARITIES = ("cosine", "dot")


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float = 1.0,
             similarity: str = "dot") -> torch.Tensor:
    """Strategies eq. (1) (CPC's InfoNCE): -log exp(s(y^a, y^p)) / (exp(s(y^a, y^p)) + Σ_j exp(s(y^a, y^n_j))).

    anchor, positive: [B, D] local. Anchor b's positive is positive b; its N-1 negatives are the
    positives of the other examples of the (global) batch (strategies §2.2.1: negatives from the other
    tracks of the minibatch). ``similarity="dot"`` (default): s = y^aᵀy^p / τ, the printed form and the
    authors' code with τ = 1; ``"cosine"``: the vectors are L2-normalised first. Returns the mean over the
    local anchors.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"info_nce: similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if similarity == "cosine":
        anchor, positive = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
    b = anchor.shape[0]
    keys = gather_with_grad(positive)  # [N, D]
    logits = anchor.float() @ keys.float().t() / temperature  # [B, N]
    target = torch.arange(b, device=anchor.device) + local_offset(b)
    return F.cross_entropy(logits, target)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL eq. (2): ‖p̄ − z̄‖² = 2 − 2·cos(p, z), the normalised MSE between the online prediction p and
    the target projection z (no gradient through z), averaged over the local batch. A per-example loss:
    DDP's gradient averaging makes it the global mean, nothing to gather."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo eq. (1): -log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋ ∈ queue} exp(q·k₋/τ)).

    q, k: [B, D] queries and their keys (L2-normalised here; no gradient through k); queue: [K, D]
    L2-normalised keys of earlier batches, the negatives. Returns the mean over the local queries.
    """
    q, k = F.normalize(q.float(), dim=-1), F.normalize(k.detach().float(), dim=-1)
    l_pos = (q * k).sum(dim=-1, keepdim=True)  # [B, 1]
    l_neg = q @ queue.detach().float().t()  # [B, K]
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def cpc_step_losses(predictions: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                    similarity: str = "dot") -> torch.Tensor:
    """The terms of strategies eq. (3), L_CPC = Σ_k InfoNCE(W_k c_t, y_{t+k}, {y^n}): one per step k -> [K].

    predictions[:, k-1] = W_k c_t and targets[:, k-1] = y_{t+k}, both [B, K, D] local. The negatives of
    track b at step k are the y_{t+k} of the other tracks of the (global) batch (``info_nce``), never
    another segment of track b (strategies §2.2.2).
    """
    if predictions.shape != targets.shape or predictions.dim() != 3:
        raise ValueError(f"cpc_step_losses: expected predictions and targets [B, K, D] of one shape, got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    return torch.stack([info_nce(predictions[:, k], targets[:, k], temperature, similarity)
                        for k in range(predictions.shape[1])])


def multilevel_info_nce(anchors: Sequence[torch.Tensor], positives: Sequence[torch.Tensor], temperature: float = 1.0,
                        similarity: str = "dot", return_levels: bool = False):
    """Strategies eq. (2): L_InfoNCE-Multi = Σ_i^M InfoNCE(ŷ_i^a, ŷ_i^p, {ŷ_i^n}), one eq. (1) term per level.

    anchors[i], positives[i]: [B, D_i] local vectors of level i (the i-th convolutional layer's output
    and its fully connected layer); each level's negatives are that level's vectors of the other
    examples of the (global) batch (``info_nce``). The printed sum, not a mean (the authors' code
    divides by M: the same gradients up to a constant factor). ``return_levels=True`` returns (loss,
    the M level terms [M], detached).
    """
    if len(anchors) != len(positives) or not anchors:
        raise ValueError(f"multilevel_info_nce: need one positive per anchor level and at least one level, "
                         f"got {len(anchors)} anchor and {len(positives)} positive levels")
    terms = torch.stack([info_nce(a, p, temperature, similarity) for a, p in zip(anchors, positives)])
    loss = terms.sum()
    return (loss, terms.detach()) if return_levels else loss
