"""Reproducible data order and randomness, so a resumed run repeats an uninterrupted one exactly.

Three rules make every random draw a function of (seed, position) instead of process history:

* the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)`` (``DistributedSampler``'s
  rule), and a resumed epoch skips the samples already consumed;
* each item is produced with the global RNGs (python, numpy, torch) seeded from ``(seed, epoch, index)``,
  so crops, flips and synthetic degradations do not depend on which worker made them or on what came
  before;
* per-step draws (masks, drop-path) use generators seeded from ``(seed, step)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values (stable across processes and Python runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed python's, numpy's and torch's (CPU) global RNGs, restoring their states afterwards."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class EpochSeededDataset(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` is drawn with RNGs seeded by (seed, e, i).

    ``set_epoch`` is forwarded to the wrapped dataset when it has one.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        with seeded_globals(derive_seed(self.seed, "item", self.epoch, int(index))):
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order seeded by seed + epoch, split across ranks) that can start an epoch
    after the first ``skip`` samples of this rank, for an exact resume in the middle of an epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self.skip = 0

    def set_skip(self, skip: int) -> None:
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip
