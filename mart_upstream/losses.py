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
