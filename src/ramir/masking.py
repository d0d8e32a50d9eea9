"""Pixel masks for masked image modelling (RAM_SPEC §2), kept outside the networks.

A mask is a float tensor with 1 where a pixel is *masked*. Masking happens in ImageNet-normalised
space by setting masked pixels to 0 (the mean colour); no learned token is used.
"""

from __future__ import annotations

import math

import torch


def pixel_mask(
    height: int,
    width: int,
    ratio: float = 0.5,
    patch: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A (height, width) {0, 1} float mask with ``ceil(ratio * cells)`` masked patches.

    Patches of ``patch x patch`` pixels are masked as units (the grid is anchored at the top-left and
    partial border patches count as cells), chosen by one random permutation — for ``patch=1`` exactly
    ``ceil(ratio*H*W)`` pixels, as in the reference's mask generator.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    if patch < 1:
        raise ValueError(f"mask patch size must be >= 1, got {patch}")
    gh, gw = math.ceil(height / patch), math.ceil(width / patch)
    cells = gh * gw
    n_masked = math.ceil(ratio * cells - 1e-9)
    order = torch.randperm(cells, generator=generator)
    grid = torch.zeros(cells)
    grid[order[:n_masked]] = 1.0
    grid = grid.view(gh, gw)
    if patch > 1:
        grid = grid.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:height, :width]
    return grid.contiguous().to(device) if device is not None else grid.contiguous()


def batch_masks(
    batch: int,
    height: int,
    width: int,
    ratio: float = 0.5,
    patch: int = 1,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Masks shaped (B, 1, H, W): one mask shared by the batch (reference) or one per sample."""
    if per_sample:
        masks = [pixel_mask(height, width, ratio, patch, generator) for _ in range(batch)]
        m = torch.stack(masks)
    else:
        m = pixel_mask(height, width, ratio, patch, generator).expand(batch, height, width)
    m = m.unsqueeze(1).contiguous()
    return m.to(device) if device is not None else m


def apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked pixels of a normalised tensor (N, C, H, W); ``mask`` is (H, W), (N, H, W) or
    (N, 1, H, W) with 1 = masked. Equal to the reference's ``x*(1-m) + 0*m``."""
    m = mask.to(dtype=x.dtype, device=x.device)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    return x * (1.0 - m)


def twin_masks(
    height: int, width: int, ratio: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask and its complement (paper Fig. 4)."""
    m = pixel_mask(height, width, ratio, 1, generator)
    return m, 1.0 - m


def twin_mask_forward(
    network: torch.nn.Module, x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Restore with a pre-trained (not fine-tuned) MIM model: ``f(x*(1-M))*M + f(x*M)*(1-M)``.

    Each pixel is predicted by the pass in which it was hidden, the regime the model was trained in.
    """
    m, _ = twin_masks(x.shape[-2], x.shape[-1], ratio, generator)
    m = m.to(dtype=x.dtype, device=x.device)[None, None]
    return network(x * (1 - m)) * m + network(x * m) * (1 - m)


def broadcast_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (H, W), (N, H, W) or (N or 1, 1, H, W) mask as (N, 1, H, W) in ``like``'s dtype and device."""
    m = mask.to(dtype=like.dtype, device=like.device)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    return m.expand(like.shape[0], 1, *like.shape[-2:])


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over masked pixels: ``sum(|pred-gt|*m) / (sum(m) + 1e-5) / C`` (RAM_SPEC §2).

    ``mask`` broadcasts as (N or 1, 1, H, W); the sum of the mask counts pixels, not channels, hence /C.
    """
    m = broadcast_mask(mask, pred)
    return (torch.abs(pred - target) * m).sum() / (m.sum() + 1e-5) / pred.shape[1]
