"""RAM's training mixture: each item comes from one of several sources, uniformly or by weight.

The reference samples its 8 sources (haze, rain, motion blur, low light, and clean LSDIR four times:
identity, noise, blur, JPEG) with probability 1/8 each. Here every item's randomness (source, image,
crop, flips, degradation) comes from ``np.random.default_rng([seed, epoch, index])``, so an item
depends only on (seed, epoch, index): not on the number of DataLoader workers, on which worker or
rank loads it, or on what was loaded before. The dataset is map-style with a virtual length
``samples_per_epoch``, so ``DistributedSampler`` and any sampler work unchanged.

Call :meth:`MixtureDataset.set_epoch` at the start of every epoch (as with ``DistributedSampler``)
to get fresh patches; the epoch lives in shared memory, so persistent workers see it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ramir.data.datasets import PatchSampler
from ramir.errors import ConfigError


def normalize_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Probabilities from non-negative weights (None: uniform)."""
    if n == 0:
        raise ConfigError("a mixture needs at least one source")
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ConfigError(f"expected {n} weights, got {len(w)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    return w / w.sum()


class MixtureDataset(Dataset):
    """``samples_per_epoch`` random items drawn from ``samplers`` with probabilities ``weights``."""

    def __init__(
        self,
        samplers: Sequence[PatchSampler],
        *,
        samples_per_epoch: int,
        weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if samples_per_epoch < 1:
            raise ConfigError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.samplers = list(samplers)
        self.probabilities = normalize_weights(weights, len(self.samplers))
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def tasks(self) -> list[str]:
        return [s.task for s in self.samplers]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def source_index(self, index: int) -> int:
        """Which source item ``index`` comes from in the current epoch (the first draw of its RNG)."""
        return int(self.rng(index).choice(len(self.samplers), p=self.probabilities))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} out of range for {self.samples_per_epoch} samples")
        rng = self.rng(index)
        k = int(rng.choice(len(self.samplers), p=self.probabilities))
        return self.samplers[k].sample(rng)
