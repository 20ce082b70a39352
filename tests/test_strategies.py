"""The strategies paper as printed (issue 28): eq. (1)'s dot product by default, the paper's augmentation
chain for its models (CLMR's chain for the others, unchanged), time stretch without trailing silence,
an audible noise SNR, MelCPC's context/prediction layouts, the CNN-5 mel bands, random playlist queries
and the playlist filters, the SVM probe, the MFCC-40 reference, the FMA-small and IRMAS loaders and
MoCo's Shuffle-BN."""
import math

import pytest
import torch

from mart_upstream.losses import info_nce
from mart_upstream.models import build_model, tiny_config


def _model(name, **overrides):
    torch.manual_seed(0)
    return build_model(name, {**tiny_config(name), **overrides})


# -- 1. eq. (1): a dot product without temperature, by default ----------------------------------------
def test_the_default_info_nce_is_eq_1_by_hand():
    a = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # logits a pᵀ: row 0 [2, 3], row 1 [1, -0.5]; positives on the diagonal
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(3)))
    row1 = -math.log(math.exp(-0.5) / (math.exp(1) + math.exp(-0.5)))
    assert float(info_nce(a, p)) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # cosine with a temperature is a different number on the same vectors (the option)
    assert float(info_nce(a, p, 0.05, "cosine")) != pytest.approx((row0 + row1) / 2, rel=1e-3)


@pytest.mark.parametrize("name", ["cnn5_infonce", "cnn5_multilevel", "melcpc"])
def test_siamese_and_melcpc_share_the_printed_similarity(name):
    cfg = _model(name).config
    assert (cfg.similarity, cfg.temperature) == ("dot", 1.0)


def test_the_siamese_loss_is_the_dot_product_of_its_unnormalised_vectors():
    model = _model("cnn5_infonce")
    out = model(0.1 * torch.randn(4, 2, model.clip_samples, generator=torch.Generator().manual_seed(1)))
    z1, z2 = out["z1"].double(), out["z2"].double()
    logits = z1 @ z2.t()
    by_hand = float((torch.logsumexp(logits, 1) - logits.diagonal()).mean())
    assert float(out["loss"]) == pytest.approx(by_hand, rel=1e-4)
    cos = _model("cnn5_infonce", similarity="cosine", temperature=0.05)
    assert cos.config.similarity == "cosine"  # the option still builds
