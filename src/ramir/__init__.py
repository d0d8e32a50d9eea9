"""ramir: blind all-in-one image restoration with RAM (Restore Anything with Masks) for any network."""

from __future__ import annotations

from typing import Any

from ramir.archs import create_model, list_models
from ramir.layers import attributable_layers
from ramir.masking import apply_mask, pixel_mask

__version__ = "0.1.0"

__all__ = [
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


def load(name_or_path: str | None = None, device: str = "auto", **kwargs: Any):
    """A ready-to-use restorer: ``ramir.load().restore(image)`` (see :mod:`ramir.inference`)."""
    from ramir.inference import load as _load

    return _load(name_or_path, device=device, **kwargs)
