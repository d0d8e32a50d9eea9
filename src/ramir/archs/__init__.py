"""Networks and the registry of named configurations (``create_model("ram-swinir")``).

The registry is an explicit table, not filled by import side effects. Each architecture is described
by one :class:`~ramir.archs.descriptor.Architecture` at the end of its own file (class, state-dict
detection, size multiple, memory per pixel, checkpointable blocks, export ability); the rest of ramir
asks :func:`architecture` and never names a network. Built-in architectures are imported on first use,
so ``import ramir`` stays cheap; :func:`register_architecture` adds one of your own. Each named config
is an architecture plus keyword arguments. ``create_model`` records the architecture and the full
keyword arguments on the module (``model.ramir_spec``) so that a checkpoint can carry them and rebuild
the network from one file.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ramir.archs.descriptor import Architecture

# architecture name -> module whose ARCHITECTURE describes it, in the order state dicts are recognised
# (RFR before RAM-Restormer before PromptIR: each has the keys of the next)
ARCHITECTURES: dict[str, str] = {
    "swinir": "ramir.archs.swinir",
    "rfr": "ramir.archs.rfr",
    "restormer": "ramir.archs.restormer",
    "promptir": "ramir.archs.promptir",
    "nafnet": "ramir.archs.nafnet",
    "routed": "ramir.archs.routed",
}
_REGISTERED: dict[str, Architecture] = {}


def register_architecture(descriptor: Architecture, *, replace: bool = False) -> Architecture:
    """Make a network family known to the registry, checkpoints, inference, export and training.

    Its state dicts are recognised after the built-in families'. Returns the descriptor."""
    if descriptor.name in ARCHITECTURES and not replace:
        raise ValueError(f"architecture {descriptor.name!r} is already registered")
    ARCHITECTURES[descriptor.name] = ""
    _REGISTERED[descriptor.name] = descriptor
    return descriptor


def unregister_architecture(name: str) -> None:
    """Forget an architecture added by :func:`register_architecture` (tests, plugins)."""
    if name in _REGISTERED:
        del _REGISTERED[name]
        del ARCHITECTURES[name]


def architecture(name: str) -> Architecture:
    """The descriptor of architecture ``name``."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    if name in _REGISTERED:
        return _REGISTERED[name]
    return importlib.import_module(ARCHITECTURES[name]).ARCHITECTURE


def architectures() -> list[Architecture]:
    """Every known descriptor, in recognition order (imports the built-in networks)."""
    return [architecture(name) for name in ARCHITECTURES]


@dataclass(frozen=True)
class ModelConfig:
    """A named, documented configuration of an architecture."""

    arch: str
    kwargs: dict[str, Any]
    description: str = ""
    paper: str = ""


@dataclass
class NetworkSpec:
    """What rebuilds a network: its architecture name and every constructor argument."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "kwargs": copy.deepcopy(self.kwargs)}


_RAM_PAPER = "Qin et al., Restore Anything with Masks, ECCV 2024"

MODEL_CONFIGS: dict[str, ModelConfig] = {
    "ram-swinir": ModelConfig(
        "swinir",
        dict(img_size=64, patch_size=1, in_chans=3, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6,
             mlp_ratio=2, window_size=8, upscale=1),
        "RAM-SwinIR, the paper's configuration (11.5M parameters)", _RAM_PAPER,
    ),
    "ram-swinir-small": ModelConfig(
        "swinir",
        dict(img_size=64, patch_size=1, in_chans=3, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
             mlp_ratio=2, window_size=8, upscale=1),
        "A tiny RAM-SwinIR for tests and laptop experiments (50k parameters)", _RAM_PAPER,
    ),
    "promptir": ModelConfig(
        "promptir", dict(decoder=True),
        "PromptIR / RAM-PromptIR, the paper's configuration (35.4M parameters)", _RAM_PAPER,
    ),
    "promptir-small": ModelConfig(
        "promptir", dict(decoder=True, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
        "PromptIR with one block per level (16.3M parameters)", _RAM_PAPER,
    ),
}
MODEL_CONFIGS["ram-promptir"] = MODEL_CONFIGS["promptir"]
_RAMPP_PAPER = (
    "RAM++: Robust Representation Learning via Adaptive Mask for All-in-One Image Restoration, "
    "arXiv 2509.12039"
)
MODEL_CONFIGS["ram-restormer"] = ModelConfig(
    "restormer", {},
    "RAM-Restormer, RAM++'s pre-trained network: Restormer without global skip (26.1M parameters)",
    _RAMPP_PAPER,
)
MODEL_CONFIGS["ram-restormer-small"] = ModelConfig(
    "restormer", dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "A tiny RAM-Restormer for tests (0.8M parameters)", _RAMPP_PAPER,
)
_GIANT = dict(dino_model="facebook/dinov2-giant", dino_dim=1536, dino_layers=[7, 15, 20, 22, 33, 39])
_DINO_S = dict(dino_model="facebook/dinov2-small", dino_dim=384, dino_layers=[2, 4, 6, 7, 10, 12])
MODEL_CONFIGS["ram-rfr"] = ModelConfig(
    "rfr", dict(_GIANT),
    "RAM++'s fine-tuned network: RAM-Restormer + gated DINOv2-giant fusion (81.8M + frozen 1.1B; "
    "pip install 'ramir[dino]')", _RAMPP_PAPER,
)
MODEL_CONFIGS["ram-rfr-small"] = ModelConfig(
    "rfr", dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, **_GIANT),
    "RFR with one block per level, DINOv2-giant (62.6M + frozen 1.1B)", _RAMPP_PAPER,
)
MODEL_CONFIGS["ram-rfr-dinos"] = ModelConfig(
    "rfr", dict(_DINO_S),
    "RFR on DINOv2-small: the full RAM-Restormer, a CPU-sized backbone (36.2M + frozen 22M)", _RAMPP_PAPER,
)
MODEL_CONFIGS["ram-rfr-tiny"] = ModelConfig(
    "rfr", dict(dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, **_DINO_S),
    "ram-restormer-small + DINOv2-small fusion, for CPU recipes and tests (5.1M + frozen 22M)", _RAMPP_PAPER,
)
MODEL_CONFIGS["nafnet-s"] = ModelConfig(
    "nafnet", dict(width=16, enc_blocks=[1, 1, 2], middle_blocks=2, dec_blocks=[1, 1, 1]),
    "Compact NAFNet-style U-Net: fast on CPU, the default model's network",
    "Chen et al., Simple Baselines for Image Restoration, ECCV 2022",
)
MODEL_CONFIGS["nafnet-m"] = ModelConfig(
    "nafnet", dict(width=32, enc_blocks=[1, 2, 2], middle_blocks=2, dec_blocks=[1, 1, 1]),
    "Medium NAFNet-style U-Net",
    "Chen et al., Simple Baselines for Image Restoration, ECCV 2022",
)


def get_architecture(arch: str) -> type[nn.Module]:
    """The network class of architecture ``arch``."""
    return architecture(arch).network


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(MODEL_CONFIGS)


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """Construct ``arch`` with exactly ``kwargs`` and record the spec on the module."""
    model = get_architecture(arch)(**kwargs)
    model.ramir_spec = NetworkSpec(arch, copy.deepcopy(kwargs))
    return model


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered configuration (or a bare architecture name) with keyword overrides.

    ``None`` overrides are dropped so unset CLI options never replace a configuration's defaults.
    Accepts the reference constructors' keyword names (e.g. ``embed_dim``, ``depths``, ``num_blocks``).
    """
    if name in MODEL_CONFIGS:
        cfg = MODEL_CONFIGS[name]
        arch, kwargs = cfg.arch, copy.deepcopy(cfg.kwargs)
    elif name in ARCHITECTURES:
        arch, kwargs = name, {}
    else:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return build_network(arch, **kwargs)


def network_spec(model: nn.Module) -> NetworkSpec | None:
    """The spec recorded by :func:`build_network`, looking through DDP / compile / image-space wrappers."""
    from ramir.layers import unwrap

    for m in (model, unwrap(model)):
        if isinstance(getattr(m, "ramir_spec", None), NetworkSpec):
            return m.ramir_spec
    return None


def architecture_of(model: nn.Module) -> Architecture | None:
    """The descriptor of a network: by its recorded spec (built by the registry), else by its class
    (looking through wrappers); None for a module of no known family."""
    described = _described(model)
    if described is not None:
        return described[0]
    from ramir.layers import unwrap

    cls = type(unwrap(model))
    return next((arch for arch in architectures() if arch.network is cls), None)


def _described(network: nn.Module) -> tuple[Architecture, dict[str, Any]] | None:
    """The descriptor and constructor arguments of a network the registry built (its recorded spec)."""
    spec = network_spec(network)
    return (architecture(spec.arch), spec.kwargs) if spec is not None and spec.arch in ARCHITECTURES else None


def network_multiple(network: nn.Module) -> int:
    """The size multiple a network pads its input to (its descriptor's; for any other module its
    ``size_multiple`` attribute, 1 when it has none). Tiling and ONNX padding follow it."""
    from ramir.layers import unwrap

    described = _described(network)
    if described is not None:
        arch, kwargs = described
        return int(arch.size_multiple(kwargs))
    for net in (network, unwrap(network)):
        for attr in ("size_multiple", "pad_multiple", "window_size"):
            value = getattr(net, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return 1


def bytes_per_pixel(network: nn.Module) -> int:
    """Estimated peak fp32 activation bytes per pixel of a forward pass (drives ``tile="auto"``): the
    descriptor's estimate, a generic one for modules the registry did not build."""
    from ramir.archs.descriptor import FALLBACK_BYTES_PER_PIXEL

    described = _described(network)
    if described is None:
        return FALLBACK_BYTES_PER_PIXEL
    arch, kwargs = described
    return int(arch.bytes_per_pixel(kwargs))


def fold_for_inference(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in which every block that offers an inference form (a ``folded()``
    method, e.g. :class:`ramir.archs.nafnet.NAFBlock`) is replaced by it: the same function to float
    rounding, faster to run (``docs/performance.md``); ``network`` itself when nothing folds.
    ``network`` is left untouched, so training, attribution and checkpoints keep seeing the blocks they
    know. The copy is for inference only: its parameters are derived from the original's and would not
    train to the same model."""
    if callable(getattr(network, "folded", None)):
        return network.folded().eval()
    if not any(callable(getattr(m, "folded", None)) for m in network.modules()):
        return network  # nothing to fold: no copy
    folded = copy.deepcopy(network)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if callable(getattr(child, "folded", None)):
                setattr(parent, name, child.folded())
            else:
                replace(child)

    replace(folded)
    return folded.eval()
