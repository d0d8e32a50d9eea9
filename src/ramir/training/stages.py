"""The two stages of RAM as objects the one :class:`~ramir.training.engine.Trainer` runs.

A stage decides which parameters train (``prepare``, applied to the bare network before any DDP
wrapper) and what the network sees and is scored on (``loss``). Both work in ImageNet-normalised
space, as the reference does: images arrive in [0, 1] and are normalised here.

* :class:`PretrainStage` (RAM_SPEC §2): a fresh pixel mask every step, masked pixels set to 0 (the mean
  colour), L1 counted on the masked pixels only; validated with twin masks (paper Fig. 4).
* :class:`FinetuneStage` (RAM_SPEC §4): whole images, plain L1, only the MAC-selected layers trainable.

RAM++'s pre-training, with masks from a generator trained jointly, is
:class:`~ramir.training.adasam_stage.AdaSAMPretrainStage` (RAMPP_SPEC §b).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ramir.errors import ConfigError
from ramir.imagespace import normalize
from ramir.masking import apply_mask, batch_masks, twin_mask_forward
from ramir.training.losses import pixel_loss
from ramir.training.sampling import derive_seed


class Stage(Protocol):
    """What the trainer needs of a stage. A stage may also carry ``joint``, a second network it trains
    beside this one (:class:`~ramir.training.adasam_stage.JointNetwork`, RAM++'s mask generator)."""

    name: str

    def prepare(self, model: nn.Module) -> list[str]:
        """Set ``requires_grad``; return the names of the trainable parameters."""
        ...

    def loss(self, net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, step: int, rank: int, world: int
             ) -> torch.Tensor:
        """The training loss of one local batch ([0, 1] images) at optimisation ``step``."""
        ...

    def predict(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The stage's restoration of a normalised image, for validation."""
        ...

    def metadata(self) -> dict:
        """What goes into the checkpoint's metadata to describe this stage."""
        ...


class PretrainStage:
    """Masked image modelling on paired data.

    The mask of step ``t`` is drawn from a generator seeded by (seed, t), so it is the same on every
    rank and after a resume. Masks are drawn for the *global* batch and each rank takes its samples'
    masks (``DistributedSampler`` interleaves samples across ranks), so N processes see exactly what
    one process with the global batch would see.
    """

    name = "pretrain"

    def __init__(self, ratio: float = 0.5, patch: int = 1, per_sample: bool = False, seed: int = 0,
                 loss: str = "l1") -> None:
        self.ratio, self.patch, self.per_sample, self.seed = ratio, patch, per_sample, seed
        self.loss_kind = loss

    def prepare(self, model: nn.Module) -> list[str]:
        return [n for n, p in model.named_parameters() if p.requires_grad]

    def masks(self, batch: int, height: int, width: int, step: int, rank: int = 0, world: int = 1
              ) -> torch.Tensor:
        """(batch, 1, H, W) masks of this rank's samples at ``step`` (1 = masked)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "mask", step))
        every = batch_masks(batch * world, height, width, self.ratio, self.patch, self.per_sample, g)
        return every[rank::world]

    def loss(self, net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, step: int, rank: int = 0,
             world: int = 1) -> torch.Tensor:
        b, _, h, w = lq.shape
        m = self.masks(b, h, w, step, rank, world).to(device=lq.device, dtype=lq.dtype)
        pred = net(apply_mask(normalize(lq), m))
        return pixel_loss(self.loss_kind, pred.float(), normalize(gt).float(), m)

    def predict(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Validation of a pre-trained (not fine-tuned) network: the twin-mask forward of the paper's
        Fig. 4, so every pixel is predicted in the masked regime it was trained in. The masks are fixed
        (seeded by the image size) so validations at different iterations compare."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, "val-mask", *x.shape[-2:]))
        return twin_mask_forward(net, x, self.ratio, g)

    def metadata(self) -> dict:
        return {"mask_ratio": self.ratio, "mask_patch": self.patch, "mask_per_sample": self.per_sample,
                "loss": self.loss_kind}


class FinetuneStage:
    """Fine-tune the selected layers on whole degraded images; everything else stays frozen."""

    name = "finetune"

    def __init__(self, layers: list[str], loss: str = "l1") -> None:
        if not layers:
            raise ConfigError("fine-tuning needs at least one selected layer")
        self.layers = list(layers)
        self.loss_kind = loss

    def prepare(self, model: nn.Module) -> list[str]:
        from ramir.layers import attributable_layers
        from ramir.ranking import freeze_except

        known = set(attributable_layers(model))
        unknown = [name for name in self.layers if name not in known]
        if unknown:
            raise ConfigError(
                f"{len(unknown)} selected layers are not in this network (e.g. {unknown[0]!r}): "
                "the ranking was computed on a different network"
            )
        trainable = freeze_except(model, self.layers)
        if not trainable:
            raise ConfigError("the selected layers own no parameters; nothing to fine-tune")
        return list(trainable)

    def loss(self, net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, step: int, rank: int = 0,
             world: int = 1) -> torch.Tensor:
        pred = net(normalize(lq))
        return pixel_loss(self.loss_kind, pred.float(), normalize(gt).float())

    def predict(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)

    def metadata(self) -> dict:
        return {"finetuned_layers": self.layers, "loss": self.loss_kind}


def finetune_layers(model: nn.Module, ranking_path: str, ratio: float, by: str = "count") -> list[str]:
    """The layers to tune: the top ``ratio`` of the MAC ranking in ``ranking_path`` (RAM_SPEC §4).

    For RAM++'s RFR network the ranking (computed on the RAM-Restormer) lacks the new fusion layers; as
    the reference's ``filter_name_RFR.txt`` they go first, so ``ratio`` counts over all layers (0.358 of
    439 = the 33 fusion layers + the top 124 of 406, "30 %"), and all of them are kept at any ratio."""
    from ramir.ranking import load_ranking, select_layers

    ranking = load_ranking(ranking_path)
    extra: list[str] = list(getattr(model, "rfr_layers", list)())
    if not extra:
        return list(select_layers(ranking, ratio, by=by, model=model))
    full = extra + [name for name in ranking if name not in extra]
    chosen = select_layers(full, ratio, by=by, model=model)
    return extra + [name for name in chosen if name not in extra]
