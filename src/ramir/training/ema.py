"""Exponential moving average of a network's whole state_dict (parameters *and* buffers).

The reference (BasicSR ``model_ema``) averages parameters only and copies nothing else; averaging the
whole state_dict, as timm's ``ModelEmaV2`` does, keeps float buffers (e.g. running statistics) in step
with the averaged weights. Integer buffers (SwinIR's ``relative_position_index``) are copied.

After each optimisation step: ``ema = decay * ema + (1 - decay) * raw``. The average starts as a copy of
the initial weights (BasicSR's ``model_ema(0)``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ramir.layers import unwrap


class ModelEma:
    """A frozen copy of the network whose state follows the raw weights with ``decay``.

    The copy is a full module so that validation can run the averaged weights directly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _pairs(self, model: nn.Module):
        """(ema floats, raw floats, ema others, raw others); rebuilt each call, so moving or converting
        the model (``.to``, channels_last) never leaves stale references behind."""
        mine, theirs = self.module.state_dict(keep_vars=True), unwrap(model).state_dict(keep_vars=True)
        if mine.keys() != theirs.keys():
            raise ValueError("EMA and model state_dict keys differ")
        ef, rf, eo, ro = [], [], [], []
        for key, e in mine.items():
            r = theirs[key]
            if e.is_floating_point():
                ef.append(e.data)
                rf.append(r.data.to(e.dtype))
            else:
                eo.append(e.data)
                ro.append(r.data)
        return ef, rf, eo, ro

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current state."""
        ef, rf, eo, ro = self._pairs(model)
        if ef:
            # lerp: ema + (1 - decay) * (raw - ema) == decay * ema + (1 - decay) * raw
            torch._foreach_lerp_(ef, rf, 1.0 - self.decay)
        for e, r in zip(eo, ro, strict=True):
            e.copy_(r)

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Reset the average to ``model``'s current weights."""
        self.module.load_state_dict(unwrap(model).state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def to(self, device: torch.device | str) -> ModelEma:
        self.module.to(device)
        return self
