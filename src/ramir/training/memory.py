"""Activation checkpointing: trade compute for memory when training big configurations.

With ``train.activation_checkpointing: true`` each transformer/NAF block keeps only its input during the
forward pass and recomputes its intermediates in the backward pass: the attention maps, MLP expansions
and normalised copies that dominate a training step's memory of the reference configs are never stored
at once, for about one extra forward pass of compute. Gradients are unchanged (the recomputation is
deterministic: dropout and drop-path are off in every shipped config).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ramir.errors import ConfigError


def default_block_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The repeated blocks (the unit worth recomputing) that the known architectures' descriptors
    name, those present in ``model``."""
    from ramir.archs import architectures

    known = tuple(dict.fromkeys(t for arch in architectures() for t in arch.checkpoint_blocks))
    return tuple(t for t in known if any(isinstance(m, t) for m in model.modules()))


def checkpoint_blocks(model: nn.Module, block_types: tuple[type[nn.Module], ...] | None = None) -> int:
    """Make every module of ``block_types`` recompute its activations in the backward pass.

    Works on any ``nn.Module`` (pass your own block classes); returns how many blocks were wrapped.
    Only training forwards (train mode, grad enabled) checkpoint: evaluation and MAC (eval mode, where
    forward hooks must see each block run once) run the blocks as they are.
    """
    types = block_types if block_types is not None else default_block_types(model)
    if not types:
        raise ConfigError(
            f"train.activation_checkpointing: no known blocks in {type(model).__name__}; call "
            "ramir.training.memory.checkpoint_blocks(model, (YourBlock, ...)) instead"
        )
    count = 0
    for module in model.modules():
        if isinstance(module, types) and not getattr(module, "_ramir_checkpointed", False):
            module.forward = _checkpointed(module, module.forward)
            module._ramir_checkpointed = True
            count += 1
    return count


def _checkpointed(module: nn.Module, forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        if not (module.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
