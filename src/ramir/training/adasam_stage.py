"""RAM++ stage 1: the restoration network and its mask generator trained together (RAMPP_SPEC §b).

RAM masks random pixels (:class:`~ramir.training.stages.PretrainStage`); RAM++ draws them from AdaSAM
(:mod:`ramir.adasam`), which learns to mask what the network restores worst. One step, with lq and gt
ImageNet-normalised (B, 3, S, S), S the generator's img_size (128), G in train mode (dropout on):

    mask, p = G(lq)                      mask: multinomial draw from p, 1 = masked, not differentiable
    out     = net(lq * (1 - mask))       the reference's inp*(1-mask) + 0*mask: net's loss never reaches G
    L_rec   = sum(|out - gt| m) / (sum(m) + 1e-5) / 3                            weight 1     -> net only
    L_prob  = -sum(|out.detach() - gt| m log(p + 1e-6)) / (sum(m) + 1e-5) / 3    weight 1e-4  -> G only
    (L_rec + 1e-4 L_prob).backward(); both Adams step; both EMAs (0.995) follow

The two detach points (the mask into net, ``out`` into L_prob) let one backward pass train each network
on its own loss. net's Adam uses ``optim`` (RAM++: 2e-4), G's ``mask.lr`` (1e-6) with the same betas and
weight decay; the warm-up + cosine of ``schedule`` drives each from its own base rate, as RAM++'s one
scheduler per optimiser (G's base equals eta_min, so after the warm-up its rate stays at 1e-6).

The generator travels as a :class:`JointNetwork`, which the trainer steps, averages, DDP-wraps, saves
and resumes beside the network: its raw + EMA weights go to ``<name>.generator.safetensors`` next to each
``iter_N.safetensors`` / ``final.safetensors`` (:func:`ramir.adasam.load_mask_generator` reads them),
its optimiser and EMA into the same ``iter_N.state``.

The masks of step t come from a torch generator seeded by (seed, t, rank), so a resumed run draws what
an uninterrupted one drew. Unlike random masks they are not split from a global-batch draw: each depends
on its own image's probabilities, so N processes draw other masks than one process with the whole batch
(the reference draws on every GPU independently too).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ramir.adasam import adaptive_mask_prob_l1_loss, create_mask_generator, generator_config
from ramir.archs import NetworkSpec
from ramir.errors import CheckpointError
from ramir.imagespace import normalize
from ramir.masking import apply_mask
from ramir.training import distributed
from ramir.training.config import Recipe, ScheduleSection
from ramir.training.ema import ModelEma
from ramir.training.losses import pixel_loss
from ramir.training.sampling import derive_seed
from ramir.training.schedule import WarmupCosine
from ramir.training.stages import PretrainStage


def joint_weights_path(path: str | Path, name: str = "generator") -> Path:
    """``run/final.safetensors`` -> ``run/final.generator.safetensors``: the joint network's file beside
    the network's."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.{name}.safetensors")


class JointLosses(NamedTuple):
    """One step's terms (``total`` is what is back-propagated) and what produced them."""

    total: torch.Tensor
    reconstruction: torch.Tensor  # L_rec, trains the network
    probability: torch.Tensor  # prob_weight * L_prob, trains the generator
    output: torch.Tensor  # net(lq * (1 - mask))
    mask: torch.Tensor  # (B, 1, S, S), 1 = masked


def adasam_pretrain_losses(
    net: nn.Module,
    generator: nn.Module,
    lq: torch.Tensor,
    gt: torch.Tensor,
    *,
    prob_weight: float = 1e-4,
    loss: str = "l1",
    rng: torch.Generator | None = None,
) -> JointLosses:
    """The losses of one joint step on normalised ``lq``/``gt`` (the module docstring's equations).

    ``rng`` draws the mask (None: torch's global RNG, as the reference); the networks' train/eval modes
    are the caller's. ``loss`` is the recipe's pixel loss for L_rec (``l1`` is RAM++'s AdaptiveMaskL1);
    L_prob always weighs the L1 error.
    """
    mask, probs = generator(lq, generator=rng)
    out = net(apply_mask(lq, mask))
    reconstruction = pixel_loss(loss, out.float(), gt.float(), mask)
    probability = prob_weight * adaptive_mask_prob_l1_loss(out.float(), gt.float(), mask, probs.float())
    return JointLosses(reconstruction + probability, reconstruction, probability, out, mask)


class JointNetwork:
    """A second network trained beside the trainer's, with its own Adam, schedule and EMA.

    ``module`` is the bare network (optimised, averaged, saved); ``net`` is what a stage calls, the DDP
    wrapper under torchrun. Parameters the forward never uses (AdaSAM's ``mask_token``) are frozen, as
    the trainer does for the main network, so DDP needs no ``find_unused_parameters``; Adam would skip
    them anyway, and they stay in the saved weights.
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        spec: NetworkSpec,
        *,
        lr: float,
        betas: Sequence[float],
        weight_decay: float,
        schedule: ScheduleSection,
        ema_decay: float,
    ) -> None:
        self.name, self.module, self.net, self.spec = name, module, module, spec
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.schedule, self.ema_decay = schedule, ema_decay
        self.trainable: list[str] = []
        self.unused: list[str] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: WarmupCosine | None = None
        self.ema: ModelEma | None = None

    # -- set-up, called by the trainer --------------------------------------------------------------

    def setup(self, device: torch.device, env: distributed.DistEnv, probe: torch.Tensor) -> None:
        """Move to ``device``, freeze what a forward of ``probe`` leaves without gradient, and build the
        optimiser, its schedule and (on rank 0, which saves) the EMA."""
        self.module.to(device)
        self.unused = self._freeze_unused(probe.to(device))
        if self.unused and env.is_main:
            print(f"note: {self.name}: {len(self.unused)} parameter(s) receive no gradient and stay frozen: "
                  f"{', '.join(self.unused[:5])}", file=sys.stderr)
        self.trainable = [n for n, p in self.module.named_parameters() if p.requires_grad]
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=self.betas,
                                          weight_decay=self.weight_decay)
        s = self.schedule
        self.scheduler = WarmupCosine(self.optimizer, base_lr=self.lr, iterations=s.iterations,
                                      warmup=s.warmup, eta_min=s.eta_min)
        self.ema = ModelEma(self.module, self.ema_decay) if self.ema_decay > 0 and env.is_main else None

    def _freeze_unused(self, probe: torch.Tensor) -> list[str]:
        was_training = self.module.training
        self.module.eval()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            out = self.module(probe)
            parts = out if isinstance(out, tuple) else (out,)
            sum(t.float().sum() for t in parts if isinstance(t, torch.Tensor) and t.requires_grad).backward()
        self.module.train(was_training)
        unused = []
        for name, p in self.module.named_parameters():
            if p.requires_grad and p.grad is None:
                p.requires_grad_(False)
                unused.append(name)
            p.grad = None
        return unused

    def wrap(self, env: distributed.DistEnv, device: torch.device) -> None:
        """DDP-wrap after freezing and after a resume has loaded the weights (DDP broadcasts rank 0's)."""
        self.net = distributed.wrap(self.module, env, device)

    # -- one step -----------------------------------------------------------------------------------

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def apply_lr(self, step: int) -> float:
        assert self.scheduler is not None, "JointNetwork.setup() first"
        return self.scheduler.apply(step)

    def zero_grad(self) -> None:
        assert self.optimizer is not None, "JointNetwork.setup() first"
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        assert self.optimizer is not None, "JointNetwork.setup() first"
        if scaler is not None:
            scaler.step(self.optimizer)
        else:
            self.optimizer.step()

    def update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update(self.module)

    # -- saving and resuming --------------------------------------------------------------------------

    def weights_path(self, network_path: Path) -> Path:
        return joint_weights_path(network_path, self.name)

    def save_weights(self, network_path: Path, *, stage: str, metadata: dict[str, Any]) -> Path:
        """Raw + EMA weights beside the network's ``network_path``; returns the file written."""
        from ramir.checkpoints import save_checkpoint

        path = self.weights_path(network_path)
        save_checkpoint(path, self.module, spec=self.spec, stage=stage,
                        ema_state_dict=self.ema.state_dict() if self.ema is not None else None,
                        metadata=metadata)
        return path

    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None and self.scheduler is not None, "JointNetwork.setup() first"
        return {"name": self.name, "trainable": self.trainable, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load(self, network_path: Path, state: dict[str, Any] | None, where: Path) -> None:
        """Resume from the weights beside ``network_path`` and the ``state`` saved in ``where``."""
        from ramir.checkpoints import load_checkpoint

        assert self.optimizer is not None and self.scheduler is not None, "JointNetwork.setup() first"
        if not state or state.get("name") != self.name:
            raise CheckpointError(f"{where} holds no state of the {self.name} trained beside the network")
        if state["trainable"] != self.trainable:
            raise CheckpointError(f"{where}: the {self.name}'s trainable parameters differ from this run's")
        self.module.load_state_dict(load_checkpoint(self.weights_path(network_path)).raw_state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"{where} holds no EMA of the {self.name} but this run keeps one")
            self.ema.load_state_dict(state["ema"])


class AdaSAMPretrainStage(PretrainStage):
    """RAM++ pre-training: masks from a generator trained jointly (its :class:`JointNetwork` is ``joint``).

    Validation is :class:`PretrainStage`'s twin-mask forward with random pixel masks of the same ratio:
    the generator only scores ``img_size`` crops, validation images are whole.
    """

    name = "pretrain_adasam"

    def __init__(self, joint: JointNetwork, *, prob_weight: float = 1e-4, seed: int = 0,
                 loss: str = "l1") -> None:
        super().__init__(ratio=getattr(joint.module, "mask_ratio", 0.5), seed=seed, loss=loss)
        self.joint, self.prob_weight = joint, prob_weight

    @classmethod
    def from_recipe(cls, recipe: Recipe, generator: nn.Module | None = None) -> AdaSAMPretrainStage:
        """The stage of a ``stage: pretrain_adasam`` recipe; ``generator`` replaces the one its ``mask``
        section describes (e.g. pre-loaded weights)."""
        m, o = recipe.mask, recipe.optim
        assert m.generator is not None, "Recipe.validate guarantees a generator for this stage"
        if generator is None:
            generator = create_mask_generator(m.generator, mask_ratio=m.ratio, **m.generator_args)
        joint = JointNetwork("generator", generator, NetworkSpec(m.generator, generator_config(generator)),
                             lr=m.lr, betas=o.betas, weight_decay=o.weight_decay, schedule=recipe.schedule,
                             ema_decay=recipe.ema.decay)
        return cls(joint, prob_weight=m.prob_weight, seed=recipe.train.seed, loss=recipe.loss)

    def mask_rng(self, step: int, rank: int, device: torch.device) -> torch.Generator:
        """The generator of step ``step``'s mask draw on ``rank``."""
        return torch.Generator(device=device).manual_seed(derive_seed(self.seed, "adasam-mask", step, rank))

    def loss(self, net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, step: int, rank: int = 0,
             world: int = 1) -> torch.Tensor:
        self.joint.net.train()  # RAM++ trains the generator with its dropout on
        return adasam_pretrain_losses(
            net, self.joint.net, normalize(lq), normalize(gt), prob_weight=self.prob_weight,
            loss=self.loss_kind, rng=self.mask_rng(step, rank, lq.device),
        ).total

    def metadata(self) -> dict:
        return {"mask_generator": self.joint.spec.arch, "mask_generator_config": self.joint.spec.kwargs,
                "mask_ratio": self.ratio, "prob_weight": self.prob_weight, "generator_lr": self.joint.lr,
                "loss": self.loss_kind}
