"""The pixel losses a recipe can choose (``loss: l1 | psnr``), with or without a pixel mask.

* ``l1``: the mean absolute error over the (masked) pixels, RAM's loss (RAM_SPEC §2, §4).
* ``psnr``: the batch mean of each sample's ``10 log10(MSE)`` (a negative PSNR), as NAFNet trains.
  Averaging logarithms instead of errors gives every sample the same weight in *decibels*: a
  degradation whose input is far from the target (haze, low light: errors of 50/255) no longer
  outweighs one whose input is close (JPEG q50, light blur: 3/255), which an error average lets it do.
  That is also what an evaluation that averages PSNR over images rewards.
"""

from __future__ import annotations

import math

import torch

from ramir.masking import broadcast_mask, masked_l1_loss

LOSSES = ("l1", "psnr")
_DB = 10.0 / math.log(10.0)


def pixel_loss(
    kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``kind`` of :data:`LOSSES` between (N, C, H, W) tensors, over the pixels where ``mask`` is 1."""
    if kind == "l1":
        if mask is None:
            return torch.nn.functional.l1_loss(pred, target)
        return masked_l1_loss(pred, target, mask)
    if kind == "psnr":
        sq = (pred - target).pow(2)
        if mask is None:
            mse = sq.flatten(1).mean(1)
        else:
            m = broadcast_mask(mask, pred)
            mse = (sq * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * pred.shape[1] + 1e-5)
        return _DB * torch.log(mse + 1e-8).mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")
