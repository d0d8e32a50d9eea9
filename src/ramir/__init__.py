"""ramir: blind all-in-one image restoration with RAM (Restore Anything with Masks) for any network."""

from __future__ import annotations

from typing import Any

from ramir._version import __version__
from ramir.archs import Architecture, create_model, list_models, register_architecture
from ramir.layers import attributable_layers
from ramir.masking import apply_mask, pixel_mask

__all__ = [
    "Architecture",
    "__version__",
    "apply_mask",
    "attributable_layers",
    "create_mask_generator",
    "create_model",
    "list_models",
    "load",
    "load_network",
    "mac_scores",
    "pixel_mask",
    "rank_layers",
    "register_architecture",
]


def load_network(path_or_state_dict: Any, prefer_ema: bool = True):
    """Rebuild a network from a reference ``.pth``, a bare state dict or a ramir checkpoint."""
    from ramir.checkpoints import load_network as _load

    return _load(path_or_state_dict, prefer_ema=prefer_ema)


def create_mask_generator(name: str = "adasam", **kwargs: Any):
    """A learned pixel-mask generator, e.g. RAM++'s AdaSAM (see :mod:`ramir.adasam`)."""
    from ramir.adasam import create_mask_generator as _create

    return _create(name, **kwargs)


def mac_scores(model, images, **kwargs) -> dict[str, float]:
    """Mask Attribute Conductance of every attributable layer (see :mod:`ramir.mac`)."""
    from ramir.mac import mac_scores as _mac

    return _mac(model, images, **kwargs)


def rank_layers(model, images=None, method: str = "mac", **kwargs):
    """Rank the attributable layers by MAC, integrated gradients or at random (:mod:`ramir.ranking`)."""
    from ramir.ranking import rank_layers as _rank

    return _rank(model, images, method, **kwargs)


def load(name_or_path: str | None = None, device: str = "auto", **kwargs: Any):
    """A ready-to-use restorer: ``ramir.load().restore(image)`` (see :mod:`ramir.inference`)."""
    from ramir.inference import load as _load

    return _load(name_or_path, device=device, **kwargs)
