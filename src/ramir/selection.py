"""From a MAC ranking to the layers RAM fine-tunes (RAM_SPEC §4).

RAM fine-tunes only the top of the ranking: the first ``int(n_layers * ratio)`` layers (RAM-SwinIR 0.1,
RAM-PromptIR 0.3), everything else frozen. A parameter is trainable iff its *direct* parent module is
selected, so selecting ``attn`` (SwinIR's WindowAttention) trains its relative-position table only, not
its ``qkv``/``proj`` children.

Layer names never carry a ``module.`` prefix: ``freeze_except`` strips wrapper prefixes before matching,
so it behaves the same on a plain model and on ``DistributedDataParallel(model)`` (the reference matched
the prefixed names, and without DDP froze every parameter).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

__all__ = ["canonical_name", "freeze_except", "select_layers", "trainable_fraction"]

# prefixes added by wrappers: DistributedDataParallel / DataParallel, torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def canonical_name(name: str) -> str:
    """A parameter or module name without wrapper prefixes (``module.``, ``_orig_mod.``)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def _parent(param_name: str) -> str:
    """The module that directly owns a parameter ("" for a top-level parameter)."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _params_by_layer(model: nn.Module) -> dict[str, int]:
    """Number of parameters each module owns directly, keyed by canonical module name."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        layer = _parent(canonical_name(name))
        counts[layer] = counts.get(layer, 0) + p.numel()
    return counts


def select_layers(
    ranking: Sequence[str], ratio: float, *, by: str = "count", model: nn.Module | None = None
) -> list[str]:
    """The top of ``ranking`` (most important first) to fine-tune.

    ``by="count"``: the first ``int(len(ranking) * ratio)`` layers, as the reference does.
    ``by="params"``: layers in rank order while their parameters stay within ``ratio`` of all the
    model's parameters (stops at the first layer that would exceed it); needs ``model``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"selection ratio must be in [0, 1], got {ratio}")
    names = list(ranking)
    if len(set(names)) != len(names):
        raise ValueError("the ranking lists a layer more than once")
    if by == "count":
        return names[: int(len(names) * ratio)]
    if by != "params":
        raise ValueError(f"unknown selection mode {by!r}; use 'count' or 'params'")
    if model is None:
        raise ValueError("selecting by parameter budget needs the model")
    owned = _params_by_layer(model)
    unknown = [name for name in names if name not in owned]
    if unknown:
        raise ValueError(f"ranking names layer(s) not in the model: {', '.join(unknown[:5])}")
    budget = ratio * sum(owned.values())
    chosen: list[str] = []
    used = 0
    for name in names:
        if used + owned[name] > budget:
            break
        chosen.append(name)
        used += owned[name]
    return chosen


def freeze_except(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Make exactly the parameters owned directly by ``layers`` trainable; freeze all others.

    Returns the trainable parameter names (canonical, without wrapper prefixes). Raises ``ValueError``
    naming any layer that owns no parameter in ``model``.
    """
    wanted = {canonical_name(name) for name in layers}
    owned = _params_by_layer(model)
    unknown = sorted(wanted - owned.keys())
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ValueError(f"unknown layer(s), not owning any parameter of the model: {shown}")
    trainable: list[str] = []
    for name, p in model.named_parameters():
        canonical = canonical_name(name)
        keep = _parent(canonical) in wanted
        p.requires_grad_(keep)
        if keep:
            trainable.append(canonical)
    return trainable


def trainable_fraction(model: nn.Module) -> float:
    """Fraction of the model's parameters (by count of values) that require gradients."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable / total if total else 0.0
