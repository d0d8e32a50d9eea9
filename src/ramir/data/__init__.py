"""The data layer of ramir: degradations, paired folders, training mixtures. Knows nothing of models.

- :mod:`ramir.data.degradations`: the reference's Gaussian noise, Gaussian blur and JPEG (bit-exact),
  test-time versions and out-of-distribution noises;
- :mod:`ramir.data.synthetic`: haze, rain, low light and motion blur made from clean photos;
- :mod:`ramir.data.kernels`: camera-shake kernels and the Levin 2009 kernel reader;
- :mod:`ramir.data.folders`: reading images, the paired layouts (:data:`LAYOUTS`) and name matching;
- :mod:`ramir.data.datasets`: sources, training patches, validation items;
- :mod:`ramir.data.mixture`: the seeded multi-source training mixture;
- :mod:`ramir.data.recipe`: the recipe's ``data:`` schema, :func:`build_dataset`, :func:`verify_sources`,
  :func:`mac_images`.

Images are HWC float32 RGB in [0, 1] in numpy; dataset items are (3, H, W) float32 RGB tensors.
"""

from __future__ import annotations

from ramir.data.datasets import CleanSource, PairedSource, PatchSampler, ValidationDataset
from ramir.data.degradations import degrade_for_test
from ramir.data.folders import LAYOUTS, list_images, pair_folders, read_rgb_float
from ramir.data.mixture import MixtureDataset
from ramir.data.online import DEGRADATIONS, Degradation, build_degradation, canonical_kind
from ramir.data.recipe import (
    SOURCE_KEYS,
    SOURCE_TYPES,
    build_dataset,
    mac_images,
    parse_split,
    source_reports,
    verify_sources,
)

__all__ = [
    "DEGRADATIONS",
    "LAYOUTS",
    "SOURCE_KEYS",
    "SOURCE_TYPES",
    "CleanSource",
    "Degradation",
    "MixtureDataset",
    "PairedSource",
    "PatchSampler",
    "ValidationDataset",
    "build_dataset",
    "build_degradation",
    "canonical_kind",
    "degrade_for_test",
    "list_images",
    "mac_images",
    "pair_folders",
    "parse_split",
    "read_rgb_float",
    "source_reports",
    "verify_sources",
]
