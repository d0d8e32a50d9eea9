"""The units MAC ranks and fine-tuning selects: modules that directly own parameters (RAM_SPEC §3)."""

from __future__ import annotations

from torch import nn


def attributable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in ``named_parameters()`` order.

    Each parameter's parent module is taken (its name minus the last component); top-level parameters
    (e.g. SwinIR's unused ``mask_token``) are skipped, and consecutive duplicates are dropped. This is
    exactly the reference's hook list: 263 layers for RAM-SwinIR, 445 for PromptIR.
    """
    names: list[str] = []
    for pname, _ in model.named_parameters():
        if "." not in pname:
            continue
        parent = pname.rsplit(".", 1)[0]
        if not names or names[-1] != parent:
            names.append(parent)
    return names


def layer_parameters(model: nn.Module, layer: str) -> dict[str, nn.Parameter]:
    """Parameters owned directly by ``layer`` (not by its children), keyed by full name."""
    module = model.get_submodule(layer)
    return {f"{layer}.{n}": p for n, p in module.named_parameters(recurse=False)}


# attributes through which wrappers hold the network: DistributedDataParallel / DataParallel
# (``module``), torch.compile (``_orig_mod``), ramir's image-space and twin-mask wrappers (``network``)
WRAPPER_ATTRIBUTES = ("module", "_orig_mod", "network")


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside wrappers: a module whose parameters all belong to one child held as
    ``module``, ``_orig_mod`` or ``network`` is looked through, repeatedly. A network that merely has
    a child of that name, beside parameters of its own, is left as it is."""
    while True:
        for attr in WRAPPER_ATTRIBUTES:
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module) and inner is not model and all(
                name.startswith(f"{attr}.") for name, _ in model.named_parameters()
            ):
                model = inner
                break
        else:
            return model
