"""Masking lives outside the networks: counts, seeding, sharing, and the masked-L1 formula."""

from __future__ import annotations

import math

import pytest
import torch

from ramir.masking import (
    apply_mask,
    batch_masks,
    masked_l1_loss,
    pixel_mask,
    twin_mask_forward,
    twin_masks,
)


@pytest.mark.parametrize("h,w,ratio", [(61, 70, 0.5), (64, 64, 0.5), (7, 9, 0.2), (10, 10, 0.3), (5, 5, 1.0)])
def test_exact_count_for_pixel_masks(h, w, ratio):
    m = pixel_mask(h, w, ratio, generator=torch.Generator().manual_seed(1))
    assert m.shape == (h, w)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert int(m.sum()) == math.ceil(round(ratio * h * w, 9))


def test_seeded_and_varies():
    a = pixel_mask(32, 32, generator=torch.Generator().manual_seed(3))
    b = pixel_mask(32, 32, generator=torch.Generator().manual_seed(3))
    c = pixel_mask(32, 32, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_patch_masks_are_blocky():
    m = pixel_mask(16, 16, 0.5, patch=4, generator=torch.Generator().manual_seed(0))
    blocks = m.view(4, 4, 4, 4).permute(0, 2, 1, 3).reshape(16, 16)
    assert torch.all((blocks.sum(1) == 0) | (blocks.sum(1) == 16))
    assert int(m.sum()) == 8 * 16


def test_shared_and_per_sample_batch_masks():
    g = torch.Generator().manual_seed(0)
    shared = batch_masks(3, 8, 8, generator=g)
    assert shared.shape == (3, 1, 8, 8)
    assert torch.equal(shared[0], shared[2])
    per = batch_masks(3, 8, 8, per_sample=True, generator=g)
    assert not torch.equal(per[0], per[1])


def test_apply_mask_zeroes_masked_pixels_on_all_channels():
    x = torch.randn(2, 3, 5, 6)
    m = pixel_mask(5, 6, generator=torch.Generator().manual_seed(0))
    y = apply_mask(x, m)
    assert torch.all(y[:, :, m.bool()] == 0)
    assert torch.equal(y[:, :, ~m.bool()], x[:, :, ~m.bool()])
    assert torch.equal(apply_mask(x, m[None].expand(2, 5, 6)), y)


def test_masked_l1_matches_formula():
    pred, gt = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 6, 7)
    m = pixel_mask(6, 7, generator=torch.Generator().manual_seed(0))
    expected = (torch.abs(pred - gt) * m).sum() / (2 * m.sum() + 1e-5) / 3
    assert torch.allclose(masked_l1_loss(pred, gt, m), expected)
    # unmasked pixels do not count at all
    pred2 = pred.clone()
    pred2[:, :, ~m.bool()] += 100
    assert torch.allclose(masked_l1_loss(pred2, gt, m), expected)


def test_twin_masks_are_complementary_and_twin_forward_of_identity_is_identity():
    m, c = twin_masks(9, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m + c, torch.ones(9, 11))
    x = torch.randn(1, 3, 9, 11)
    # an identity network sees each pixel hidden once: the twin forward reassembles zeros
    assert torch.equal(twin_mask_forward(torch.nn.Identity(), x), torch.zeros_like(x))
    # a network that "inpaints" with a constant returns that constant everywhere
    const = twin_mask_forward(lambda t: torch.full_like(t, 2.0), x)
    assert torch.equal(const, torch.full_like(x, 2.0))


def test_bad_ratio_raises():
    with pytest.raises(ValueError):
        pixel_mask(4, 4, 1.5)
