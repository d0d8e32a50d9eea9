"""One training loop for both RAM stages: Adam, warm-up + cosine, EMA, AMP, DDP, exact resume.

The :class:`Trainer` knows nothing about masks or layer selection: a stage object
(:mod:`ramir.training.stages`) freezes what must not train and computes the loss. The trainer owns
everything else, in BasicSR's spirit but with typed settings (:mod:`ramir.training.config`):

* weights every ``save_every`` steps: ``ckpt/iter_N.safetensors`` (raw + EMA, with the recipe in its
  metadata) and ``ckpt/iter_N.state`` (optimiser, EMA, scheduler, step, RNG states), both atomic; the
  state is written last, so its presence marks a complete checkpoint; the last ``keep_last`` are kept;
* ``final.safetensors`` (raw + EMA) when the schedule is done; ``log.jsonl`` (and TensorBoard when it
  is installed) with the loss, learning rate and validation PSNR;
* a second network a stage trains beside the first (its ``joint``: RAM++'s mask generator,
  :mod:`ramir.training.adasam_stage`) gets the same treatment: its own optimiser, schedule and EMA,
  stepped with the network's, its weights in ``<checkpoint>.generator.safetensors`` beside each file
  above and its optimiser and EMA in the same state;
* resume (automatic by default) from the newest complete state: the data order, item randomness,
  masks and drop-path are functions of (seed, position) (:mod:`ramir.training.sampling`), so a run
  stopped after N steps and resumed ends with the same weights as an uninterrupted one;
* SIGINT/SIGTERM finish the current step, save a state and exit (a second signal aborts at once).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ramir.devices import cpu_bf16_problem
from ramir.errors import CheckpointError, ConfigError, DataError
from ramir.fileio import atomic_path
from ramir.imagespace import denormalize, normalize
from ramir.training import distributed
from ramir.training.config import Recipe, dump_recipe
from ramir.training.ema import ModelEma
from ramir.training.memory import checkpoint_blocks
from ramir.training.sampling import EpochSeededDataset, ResumableSampler, derive_seed
from ramir.training.schedule import WarmupCosine
from ramir.training.stages import FinetuneStage, PretrainStage, Stage, finetune_layers

STATE_FORMAT = "ramir-train-state-1"
_STATE_RE = re.compile(r"^iter_(\d{8,})\.state$")


# ---------------------------------------------------------------------------------------------------
# building blocks from a recipe


def build_model(recipe: Recipe) -> nn.Module:
    """The network to train: a registered configuration, optionally initialised from ``init_from``.

    Fine-tuning starts from the pre-trained *raw* weights (the reference) unless ``finetune.init: ema``.
    Without a ``model`` section the architecture comes from the checkpoint itself.
    """
    from ramir.archs import create_model

    use_ema = recipe.stage == "finetune" and recipe.finetune.init == "ema"
    if recipe.init_from is None:
        assert recipe.model is not None  # Recipe.validate guarantees one of the two
        return create_model(recipe.model.name, **recipe.model.overrides)
    path = Path(recipe.init_from)
    if not path.is_file():
        raise CheckpointError(f"init_from: no such checkpoint: {path}")
    if recipe.model is not None:
        from ramir.checkpoints import load_checkpoint, load_state_dict_adopting

        model = create_model(recipe.model.name, **recipe.model.overrides)
        ckpt = load_checkpoint(path)
        state = ckpt.ema_state_dict if use_ema else ckpt.raw_state_dict
        if state is None:
            raise CheckpointError(f"{path} holds no EMA weights (finetune.init: ema)")
        # a family may start from another's weights (RAM++: RFR from a RAM-Restormer checkpoint)
        load_state_dict_adopting(model, state, f"model {recipe.model.name!r}")
        return model
    from ramir.checkpoints import load_network

    if use_ema:
        from ramir.checkpoints import load_checkpoint

        if load_checkpoint(path).ema_state_dict is None:
            raise CheckpointError(f"{path} holds no EMA weights (finetune.init: ema)")
    return load_network(path, prefer_ema=use_ema).train()


def check_inputs(recipe: Recipe, *, model: bool = True, ranking: bool = True) -> None:
    """Fail fast, before any network or dataset is built, on missing checkpoint / ranking files."""
    if model and recipe.init_from is not None and not Path(recipe.init_from).is_file():
        raise CheckpointError(f"init_from: no such checkpoint: {recipe.init_from}")
    if ranking and recipe.stage == "finetune" and not tunes_everything(recipe):
        path = recipe.finetune.ranking
        if not path:
            raise ConfigError("fine-tuning needs a MAC ranking: finetune.ranking (ramir finetune --ranking)")
        if not Path(path).is_file():
            raise ConfigError(f"finetune.ranking: no such file: {path}")


def tunes_everything(recipe: Recipe) -> bool:
    """``finetune.ratio: 1`` without a ranking trains every layer: full fine-tuning from ``init_from``,
    or plain paired training (the paper's baseline) when there is no ``init_from``."""
    return recipe.finetune.ranking is None and recipe.finetune.ratio >= 1.0


def build_stage(recipe: Recipe, model: nn.Module) -> Stage:
    if recipe.stage == "pretrain":
        m = recipe.mask
        return PretrainStage(m.ratio, m.patch, m.per_sample, seed=recipe.train.seed, loss=recipe.loss)
    if recipe.stage == "pretrain_adasam":
        from ramir.training.adasam_stage import AdaSAMPretrainStage

        return AdaSAMPretrainStage.from_recipe(recipe)
    check_inputs(recipe, model=False)
    ft = recipe.finetune
    if tunes_everything(recipe):
        from ramir.layers import attributable_layers

        return FinetuneStage(attributable_layers(model), loss=recipe.loss)
    return FinetuneStage(finetune_layers(model, ft.ranking, ft.ratio, ft.by), loss=recipe.loss)


def build_datasets(recipe: Recipe) -> tuple[Dataset, Dataset | None]:
    """Training and (optional) validation sets from ``data.train`` / ``data.val`` (:mod:`ramir.data`)."""
    from ramir.data import build_dataset

    if not recipe.data.get("train"):
        raise ConfigError("the recipe has no data.train section")
    seed, base = recipe.train.seed, recipe.base_dir
    train = build_dataset(recipe.data["train"], seed=seed, train=True, base_dir=base)
    val = None
    if recipe.data.get("val"):
        val = build_dataset(recipe.data["val"], seed=seed, train=False, base_dir=base)
    return train, val


# ---------------------------------------------------------------------------------------------------
# checkpoint files


def list_states(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir/ckpt`` as (iteration, state path), oldest first."""
    ckpt_dir = Path(output_dir) / "ckpt"
    found = []
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            match = _STATE_RE.match(path.name)
            if match and path.with_suffix(".safetensors").is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def _remove_torn_writes(ckpt_dir: Path) -> None:
    """Temporary files of checkpoint writes that a SIGKILL or power loss cut short (``.iter_N.*.tmp.*``,
    see :func:`ramir.fileio.atomic_path`): never a checkpoint, only litter once the run resumes."""
    for path in ckpt_dir.glob(".iter_*.tmp.*"):
        path.unlink(missing_ok=True)


def latest_state(output_dir: str | Path) -> Path | None:
    states = list_states(output_dir)
    return states[-1][1] if states else None


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so the state file loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _psnr01(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of two (1, 3, H, W) [0, 1] images: the reference protocol (uint8, 4-pixel border) when
    :mod:`ramir.metrics` is available, a float 10*log10(1/MSE) otherwise."""
    try:
        from ramir.metrics import psnr, quantize_u8
    except ImportError:
        mse = float(torch.mean((out.double() - ref.double()) ** 2))
        return 10.0 * math.log10(1.0 / max(mse, 1e-10))
    a = quantize_u8(out[0].permute(1, 2, 0).cpu().numpy())
    b = quantize_u8(ref[0].permute(1, 2, 0).cpu().numpy())
    border = 4 if min(a.shape[:2]) > 16 else 0
    return min(float(psnr(a, b, crop_border=border)), 100.0)


# ---------------------------------------------------------------------------------------------------
# the trainer


@dataclass
class TrainResult:
    output_dir: Path
    iteration: int
    final: Path | None = None  # final.safetensors when the schedule completed
    interrupted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # the records written to log.jsonl


class Trainer:
    """Train any ``nn.Module`` on any dataset of ``{"lq", "gt", "task"}`` items with one stage.

    Everything not given is built from the recipe: ``model`` (``build_model``), ``stage``
    (``build_stage``), ``train_set``/``val_set`` (``build_datasets``). ``resume`` is ``"auto"`` (the
    newest complete state in the output directory, if any), ``"never"``, ``"required"`` or the path of a
    ``.state`` file.
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        model: nn.Module | None = None,
        stage: Stage | None = None,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        output_dir: str | Path | None = None,
        resume: str | Path = "auto",
        progress: bool = True,
    ) -> None:
        self.recipe = recipe
        cfg = recipe.train
        self.env, self.device, self._owns_group = distributed.setup(cfg.device, always=cfg.ddp == "always")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.amp = cfg.amp
        if self.amp != "none" and self.device.type != "cuda":
            why = cpu_bf16_problem() if self.amp == "bf16" and self.device.type == "cpu" else None
            warnings.warn(f"train.amp={self.amp}: {why or 'needs a GPU'}; training in float32 on "
                          f"{self.device}", stacklevel=2)
            self.amp = "none"
        self.output_dir = Path(output_dir) if output_dir is not None else recipe.resolved_output_dir()
        self.progress = progress

        check_inputs(recipe, model=model is None, ranking=stage is None)
        model = model if model is not None else build_model(recipe)
        if train_set is None:
            train_set, built_val = build_datasets(recipe)
            val_set = val_set if val_set is not None else built_val
        self.train_set, self.val_set = train_set, val_set
        self.data = EpochSeededDataset(train_set, cfg.seed)
        self.stage = stage if stage is not None else build_stage(recipe, model)
        # a network the stage trains beside this one (RAM++'s generator): stepped, averaged, saved here
        self.joint = getattr(self.stage, "joint", None)

        # Freeze on the bare network, before DDP, so both see the same trainable set (RAM_SPEC §9).
        self.stage.prepare(model)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.activation_checkpointing:
            checkpoint_blocks(model)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick its fastest kernels
        self.unused = self._freeze_unused(model)
        if self.joint is not None:
            self.joint.setup(self.device, self.env, normalize(self.data[0]["lq"][None]))
        self.model = model
        self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self.trainable:
            raise ConfigError("no parameter is trainable")
        params = [p for p in model.parameters() if p.requires_grad]
        o = recipe.optim
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        s = recipe.schedule
        self.scheduler = WarmupCosine(self.optimizer, base_lr=o.lr, iterations=s.iterations, warmup=s.warmup,
                                      eta_min=s.eta_min)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None
        # Only rank 0 validates and saves, so only it keeps the average.
        self.ema = ModelEma(model, recipe.ema.decay) if recipe.ema.decay > 0 and self.env.is_main else None
        self.iteration = 0
        self.train_time = 0.0
        self.resumed_from: Path | None = None
        self._resume(resume)
        self.net = distributed.wrap(model, self.env, self.device)
        if self.joint is not None:
            self.joint.wrap(self.env, self.device)
        self._eager_net: nn.Module | None = None
        self._compile_checked = False
        if cfg.compile:
            self._eager_net, self.net = self.net, torch.compile(self.net)

        self.sampler = ResumableSampler(self.data, num_replicas=self.env.world_size, rank=self.env.rank,
                                        seed=cfg.seed)
        self.batches_per_epoch = self.sampler.num_samples // cfg.batch_size
        if self.batches_per_epoch < 1:
            raise DataError(
                f"the training set has {len(train_set)} samples, fewer than one global batch "  # type: ignore[arg-type]
                f"({cfg.batch_size} x {self.env.world_size} processes)"
            )
        self._stop_requested = False
        self._history: list[dict[str, Any]] = []
        self._log_file = None
        self._tb = None

    # -- setup helpers ------------------------------------------------------------------------------

    def _freeze_unused(self, model: nn.Module) -> list[str]:
        """Freeze trainable parameters the forward pass never touches (e.g. SwinIR's ``mask_token``).

        DDP without ``find_unused_parameters`` would wait forever for their gradients; Adam would skip
        them anyway. One eval-mode forward/backward on a training sample finds them (eval mode: a
        dropped path must not look unused).
        """
        sample = self.data[0]["lq"][None].to(self.device)
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            out = model(normalize(sample))
            out.float().sum().backward()
        model.train(was_training)
        unused = []
        for name, p in model.named_parameters():
            if p.requires_grad and p.grad is None:
                p.requires_grad_(False)
                unused.append(name)
            p.grad = None
        if unused and self.env.is_main:
            what = "1 parameter receives no gradient and stays" if len(unused) == 1 else (
                f"{len(unused)} parameters receive no gradient and stay"
            )
            names = f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}"
            print(f"note: {what} frozen: {names}", file=sys.stderr)
        return unused

    def _resume(self, resume: str | Path) -> None:
        if resume in ("never", None, False):
            if list_states(self.output_dir):
                raise ConfigError(
                    f"{self.output_dir} already holds training states; resume from them, or choose another "
                    "output directory"
                )
            return
        if resume in ("auto", "required", True):
            path = latest_state(self.output_dir)
            if path is None:
                if resume != "auto":
                    raise CheckpointError(f"nothing to resume: no complete state in {self.output_dir}/ckpt")
                return
        else:
            path = Path(resume)
            if not path.is_file():
                raise CheckpointError(f"no such training state: {path}")
        self.load_state(path)

    def _plan(self) -> dict[str, Any]:
        """What a resumed run must share with the run that saved the state: the schedule and the mix."""
        sched = self.recipe.schedule
        sources = (self.recipe.data.get("train") or {}).get("sources") or []
        return {
            "schedule": {"iterations": sched.iterations, "warmup": sched.warmup, "eta_min": sched.eta_min,
                         "lr": self.recipe.optim.lr,
                         **({f"{self.joint.name}_lr": self.joint.lr} if self.joint is not None else {})},
            "mix": [[str(src.get("name", "")), float(src.get("weight", 1.0))]
                    for src in sources if isinstance(src, dict)],
        }

    def _check_plan(self, path: Path, saved: dict[str, Any] | None) -> None:
        if saved is None or self.recipe.train.allow_recipe_change:
            return  # states from before plans were saved, or a change the user asked for
        now = self._plan()
        for key, what in (("schedule", "schedule (iterations, warm-up, eta_min, lr)"), ("mix", "data mix")):
            same = json.loads(json.dumps(saved.get(key))) == json.loads(json.dumps(now[key]))
            if saved.get(key) is not None and not same:
                raise CheckpointError(
                    f"{path} was saved by a run with another {what}: {saved[key]} (now {now[key]}); "
                    "resume with the same recipe, or --set train.allow_recipe_change=true to change it"
                )

    def load_state(self, path: str | Path) -> None:
        """Restore weights, optimiser, EMA, step and RNGs from ``iter_N.state`` (+ its safetensors)."""
        from ramir.checkpoints import load_checkpoint

        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable training state ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: not a ramir training state")
        if state["stage"] != self.stage.name:
            raise CheckpointError(f"{path} is a {state['stage']} state; this run is {self.stage.name}")
        if state["trainable"] != self.trainable:
            raise CheckpointError(f"{path}: trainable parameters differ from this run's (changed recipe?)")
        self._check_plan(path, state.get("plan"))
        global_batch = self.recipe.train.batch_size * self.env.world_size
        if state.get("global_batch", global_batch) != global_batch:
            warnings.warn(f"{path} was saved with a global batch of {state['global_batch']}, this run uses "
                          f"{global_batch}: the data order will not continue exactly", stacklevel=2)
        weights = load_checkpoint(path.with_suffix(".safetensors"))
        self.model.load_state_dict(weights.raw_state_dict)
        if self.joint is not None:
            self.joint.load(path.with_suffix(".safetensors"), state.get("joint"), path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError(f"{path} holds no EMA state but this run keeps one")
            self.ema.load_state_dict(state["ema"])
        self.iteration = int(state["iteration"])
        self.train_time = float(state.get("train_time", 0.0))
        _set_rng_state(state["rng"])
        self.resumed_from = path
        if self.env.is_main:
            _remove_torn_writes(path.parent)
            print(f"resuming from {path} (iteration {self.iteration})", file=sys.stderr)

    # -- saving -------------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "iteration": self.iteration, **self.stage.metadata()}

    def save_weights(self, path: Path) -> None:
        from ramir.checkpoints import save_checkpoint

        save_checkpoint(path, self.model, stage=self.stage.name,
                        ema_state_dict=self.ema.state_dict() if self.ema is not None else None,
                        metadata=self._metadata())
        if self.joint is not None:
            self.joint.save_weights(path, stage=self.stage.name, metadata=self._metadata())

    def save_state(self) -> Path | None:
        """Write ``ckpt/iter_N.safetensors`` then ``ckpt/iter_N.state`` (rank 0); prune old ones."""
        if not self.env.is_main:
            return None
        ckpt_dir = self.output_dir / "ckpt"
        stem = ckpt_dir / f"iter_{self.iteration:08d}"
        self.save_weights(stem.with_suffix(".safetensors"))
        state = {
            "format": STATE_FORMAT,
            "iteration": self.iteration,
            "epoch": self.iteration // self.batches_per_epoch,
            "stage": self.stage.name,
            "trainable": self.trainable,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "joint": self.joint.state_dict() if self.joint is not None else None,
            "rng": _rng_state(),
            "train_time": self.train_time,
            "world_size": self.env.world_size,
            "global_batch": self.recipe.train.batch_size * self.env.world_size,
            "plan": self._plan(),
        }
        with atomic_path(stem.with_suffix(".state")) as tmp:
            torch.save(state, tmp)
        keep = self.recipe.train.keep_last
        if keep > 0:
            for _, old in list_states(self.output_dir)[:-keep]:
                old.unlink(missing_ok=True)
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                if self.joint is not None:
                    self.joint.weights_path(old.with_suffix(".safetensors")).unlink(missing_ok=True)
        return stem.with_suffix(".state")

    # -- logging ------------------------------------------------------------------------------------

    def _open_logs(self) -> None:
        if not self.env.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / "recipe.yaml") as tmp:
            tmp.write_text(dump_recipe(self.recipe))
        self._log_file = open(self.output_dir / "log.jsonl", "a", buffering=1)  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._tb = None
        else:
            self._tb = SummaryWriter(str(self.output_dir / "tb"))

    def _close_logs(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _record(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        self._history.append(record)
        if self._log_file is not None:
            self._log_file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, int | float):
                    self._tb.add_scalar(f"{self.stage.name}/{key}", value, record["iter"])

    # -- validation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR of the (EMA, if kept) network on ``val_set``, and of the degraded inputs.

        The stage says how the network restores: whole images after fine-tuning, twin masks after
        pre-training (a pre-trained network never saw an unmasked input)."""
        if self.val_set is None or not self.env.is_main:
            return {}
        net = self.ema.module if self.ema is not None else self.model
        was_training = net.training
        net.eval()
        out_psnr, in_psnr = [], []
        per_task: dict[str, list[tuple[float, float]]] = {}
        for i in range(len(self.val_set)):  # type: ignore[arg-type]
            item = self.val_set[i]
            lq = item["lq"][None].to(self.device)
            gt = item["gt"][None].to(self.device)
            restored = denormalize(self.stage.predict(net, normalize(lq)).float()).clamp(0.0, 1.0)
            out_psnr.append(_psnr01(restored, gt))
            in_psnr.append(_psnr01(lq, gt))
            per_task.setdefault(str(item.get("task", "val")), []).append((out_psnr[-1], in_psnr[-1]))
        net.train(was_training)
        if not out_psnr:
            return {}
        metrics = {"val_psnr": float(np.mean(out_psnr)), "val_psnr_input": float(np.mean(in_psnr))}
        if len(per_task) > 1:  # one mixed average hides a task that gets worse: log each (output - input)
            for task, pairs in sorted(per_task.items()):
                metrics[f"val_gain/{task}"] = float(np.mean([o - i for o, i in pairs]))
        return metrics

    # -- the loop -----------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimisation step at ``self.iteration`` (gradients stay in ``.grad`` afterwards)."""
        step, cfg = self.iteration, self.recipe.train
        torch.manual_seed(derive_seed(cfg.seed, "step", step, self.env.rank))  # drop-path etc.
        self.scheduler.apply(step)
        if self.joint is not None:
            self.joint.apply_lr(step)
        lq = batch["lq"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        if cfg.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
            gt = gt.contiguous(memory_format=torch.channels_last)
        try:
            loss = self._loss_and_backward(lq, gt, step)
        except Exception as exc:  # torch.compile fails lazily, on the first call: fall back to eager
            if self._eager_net is None or self._compile_checked:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "training eagerly", stacklevel=2)
            self.net, self._eager_net = self._eager_net, None
            torch.manual_seed(derive_seed(cfg.seed, "step", step, self.env.rank))
            loss = self._loss_and_backward(lq, gt, step)
        self._compile_checked = True
        if cfg.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if self.joint is not None:  # each network's norm clipped on its own
                if self.scaler is not None:
                    self.scaler.unscale_(self.joint.optimizer)
                torch.nn.utils.clip_grad_norm_(self.joint.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            if self.joint is not None:
                self.joint.step(self.scaler)
            self.scaler.update()
        else:
            self.optimizer.step()
            if self.joint is not None:
                self.joint.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if self.joint is not None:
            self.joint.update_ema()
        return loss.detach()

    def _loss_and_backward(self, lq: torch.Tensor, gt: torch.Tensor, step: int) -> torch.Tensor:
        self.net.train()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        autocast = (torch.autocast(device_type=self.device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            loss = self.stage.loss(self.net, lq, gt, step, self.env.rank, self.env.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        if self.joint is not None:
            self.joint.zero_grad()
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss

    def batches(self) -> Iterator[dict[str, Any]]:
        """Batches from the current iteration on, epoch after epoch (each epoch a fresh loader)."""
        cfg = self.recipe.train
        while True:
            epoch, done = divmod(self.iteration, self.batches_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.set_skip(done * cfg.batch_size)
            self.data.set_epoch(epoch)
            loader = DataLoader(self.data, batch_size=cfg.batch_size, sampler=self.sampler,
                                num_workers=cfg.workers, drop_last=True,
                                pin_memory=self.device.type == "cuda")
            yield from loader

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM: stop after the current step and save; a second signal aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.env.is_main:
                print(f"\n{signal.Signals(signum).name}: saving a training state after this step "
                      "(send again to abort)", file=sys.stderr)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def request_stop(self) -> None:
        """Stop after the current step, saving a state (what a signal does)."""
        self._stop_requested = True

    def fit(self, until: int | None = None) -> TrainResult:
        """Train to ``schedule.iterations`` (or stop after step ``until``, as if killed there)."""
        from tqdm import tqdm

        total = self.recipe.schedule.iterations
        stop_at = total if until is None else min(total, until)
        self._open_logs()
        result = TrainResult(self.output_dir, self.iteration, history=self._history)
        bar = tqdm(total=total, initial=self.iteration, desc=self.stage.name, unit="it", dynamic_ncols=True,
                   disable=not (self.progress and self.env.is_main), file=sys.stderr)
        self._loss_sum, self._loss_count = torch.zeros((), device=self.device), 0
        self._last_log = time.perf_counter()
        self._last_saved = self.iteration if self.resumed_from is not None else -1
        try:
            with self._signals():
                batches = self.batches()
                while self.iteration < stop_at:
                    start = time.perf_counter()
                    loss = self.train_step(next(batches))
                    self.iteration += 1
                    self.train_time += time.perf_counter() - start
                    self._loss_sum += loss.float()
                    self._loss_count += 1
                    bar.update(1)
                    self._periodic(bar)
                    if distributed.any_rank(self._stop_requested, self.env, self.device):
                        if self._last_saved != self.iteration:
                            self.save_state()
                        result.interrupted = True
                        break
            if self.iteration >= total and not result.interrupted and self.env.is_main:
                result.final = self.output_dir / "final.safetensors"
                self.save_weights(result.final)
        finally:
            bar.close()
            self._close_logs()
        distributed.barrier(self.env)  # rank 0 may still be writing the final weights
        result.iteration = self.iteration
        return result

    def _periodic(self, bar) -> None:
        """Logging, validation and checkpoints due after the step just taken."""
        cfg, it, total = self.recipe.train, self.iteration, self.recipe.schedule.iterations
        if it % cfg.log_every == 0 or it == total:
            mean = distributed.mean_over_ranks(self._loss_sum / self._loss_count, self.env).item()
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"the loss became {mean} by iteration {it}; lower optim.lr or set train.grad_clip"
                )
            now = time.perf_counter()
            record = {"iter": it, "loss": mean, "lr": self.scheduler.lr(it - 1),
                      "time": round(self.train_time, 3),
                      "it_s": self._loss_count / max(now - self._last_log, 1e-9)}
            self._record(record)
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{record['lr']:.2e}")
            self._loss_sum.zero_()
            self._loss_count, self._last_log = 0, now
        validate_now = (cfg.val_every and it % cfg.val_every == 0) or it == total
        if self.val_set is not None and validate_now:
            self._validate_and_log(bar)
            distributed.barrier(self.env)  # the other ranks wait for rank 0's validation
        if cfg.save_every and (it % cfg.save_every == 0 or it == total):
            self.save_state()
            self._last_saved = it

    def _validate_and_log(self, bar) -> None:
        metrics = self.validate()
        if metrics:
            self._record({"iter": self.iteration, **metrics})
            bar.write(f"iter {self.iteration}: val PSNR {metrics['val_psnr']:.2f} dB "
                      f"(input {metrics['val_psnr_input']:.2f} dB)")

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        distributed.cleanup(self.env, self._owns_group)


def train(
    recipe: Recipe,
    *,
    output_dir: str | Path | None = None,
    resume: str | Path = "auto",
    progress: bool = True,
    **parts: Any,
) -> TrainResult:
    """Build a :class:`Trainer` from ``recipe`` (``parts`` may supply model / stage / datasets) and run it."""
    trainer = Trainer(recipe, output_dir=output_dir, resume=resume, progress=progress, **parts)
    try:
        return trainer.fit()
    finally:
        trainer.close()
