"""The boundary between images in [0, 1] and the networks' ImageNet-normalised space.

RAM's networks (like the reference) consume and produce ImageNet-normalised RGB tensors; users never
should. Everything that touches the statistics lives here.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return mean, std


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (N, 3, H, W) -> normalised; subtract then divide, as torchvision does."""
    mean, std = _stats(x01)
    return (x01 - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Normalised -> [0, 1]-scale RGB (not clamped)."""
    mean, std = _stats(x)
    return x * std + mean


class ImageSpaceModel(nn.Module):
    """Wraps a network so that it maps [0, 1] RGB to [0, 1] RGB: normalise, run, de-normalise, clamp."""

    def __init__(self, network: nn.Module, clamp: bool = True) -> None:
        super().__init__()
        self.network = network
        self.clamp = clamp

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        y = denormalize(self.network(normalize(x01)))
        return y.clamp(0.0, 1.0) if self.clamp else y
