"""Training recipes: YAML -> typed dataclasses, with ``--set key.sub=value`` overrides.

A recipe is one YAML file per experiment, as in BasicSR, but every key is declared here with its type
and default: an unknown key (a typo) raises :class:`~ramir.errors.ConfigError` naming the key and the
valid ones, instead of being ignored and silently falling back to a default.

Only ``data`` (owned by :mod:`ramir.data`) and ``model.overrides`` (network keyword arguments, checked
by the network's constructor) are free-form dictionaries. A recipe may start with ``_base_: other.yaml``
(a path relative to the recipe, or a list of them): the bases are merged first, then the recipe on top;
dictionaries merge key by key, everything else is replaced, except a key spelt ``name+``, whose list is
appended to the base's list ``name`` (``data: {train: {sources+: [...]}}`` adds one training source).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ramir.errors import ConfigError, first_line
from ramir.training.losses import LOSSES

STAGES = ("pretrain", "pretrain_adasam", "finetune")
PRETRAIN_STAGES = ("pretrain", "pretrain_adasam")  # what ``ramir pretrain`` runs
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class ModelSection:
    """Which network to build: a registered name (``ramir models``) plus constructor overrides."""

    name: str = "ram-swinir-small"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskSection:
    """Pre-training masks (RAM_SPEC §2): ratio of masked pixels, square patch side, one mask per
    iteration shared by the batch (reference) or one per sample.

    ``stage: pretrain_adasam`` (RAM++, RAMPP_SPEC §b) draws them from a learned ``generator`` trained
    beside the network: ``generator_args`` are its constructor keywords (``ratio`` is its mask_ratio),
    ``lr`` its Adam rate (betas, weight decay, warm-up and cosine as the network's), ``prob_weight``
    the weight of its loss L_prob."""

    ratio: float = 0.5
    patch: int = 1
    per_sample: bool = False
    generator: str | None = None
    generator_args: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-6
    prob_weight: float = 1e-4


@dataclass
class OptimSection:
    """Adam, as the reference (betas (0.9, 0.99), no weight decay)."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0


@dataclass
class ScheduleSection:
    """Linear warm-up, then cosine from ``optim.lr`` to ``eta_min`` over ``iterations``."""

    iterations: int = 1000
    warmup: int = 0
    eta_min: float = 1e-7


@dataclass
class EmaSection:
    """Exponential moving average of the whole state_dict; ``decay: 0`` disables it."""

    decay: float = 0.995


@dataclass
class FinetuneSection:
    """Which layers to tune (RAM_SPEC §4): the top ``ratio`` of a MAC ranking, counted in modules
    (``by: count``, the reference) or in parameters (``by: params``); start from the pre-trained raw
    weights (``init: raw``, the reference) or their EMA."""

    ranking: str | None = None
    ratio: float = 0.1
    by: str = "count"
    init: str = "raw"


@dataclass
class TrainSection:
    """Loop settings. ``batch_size`` is per process (per GPU under torchrun)."""

    batch_size: int = 4
    workers: int = 0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    amp: str = "none"  # GPU only; ignored with a warning on CPU
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    log_every: int = 100
    val_every: int = 0  # 0: validate only at the end (when data.val is given)
    save_every: int = 5000  # 0: save only the final weights
    keep_last: int = 3  # iteration checkpoints kept; 0 keeps all
    channels_last: bool = False
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory
    compile: bool = False  # torch.compile the network; falls back to eager if compilation fails
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ddp: str = "auto"  # auto: DDP with 2+ processes; always: also with one torchrun process
    allow_recipe_change: bool = False  # resume a state saved with another schedule or data mix


@dataclass
class Recipe:
    """One experiment: what to train, on what, how long, and where to write it."""

    name: str = "ram"
    stage: str = "pretrain"
    model: ModelSection | None = None
    init_from: str | None = None  # checkpoint to start from (finetune: the pre-trained weights)
    data: dict[str, Any] = field(default_factory=dict)
    mask: MaskSection = field(default_factory=MaskSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    ema: EmaSection = field(default_factory=EmaSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    train: TrainSection = field(default_factory=TrainSection)
    loss: str = "l1"  # l1 (RAM) | psnr (per-sample log MSE, as NAFNet): ramir.training.losses
    output_dir: str = "runs/{name}"
    # where the recipe file lives: ramir.data resolves relative data roots against it (not a YAML key)
    base_dir: Path | None = field(default=None, init=False, repr=False, compare=False)

    def validate(self) -> Recipe:
        """Check values that types alone cannot; returns self so calls chain."""
        _choice("stage", self.stage, STAGES)
        _choice("train.amp", self.train.amp, AMP_MODES)
        _choice("train.ddp", self.train.ddp, ("auto", "always"))
        _choice("loss", self.loss, LOSSES)
        _choice("finetune.by", self.finetune.by, ("count", "params"))
        _choice("finetune.init", self.finetune.init, ("raw", "ema"))
        if self.model is None and self.init_from is None:
            raise ConfigError("the recipe needs 'model' (a network name) or 'init_from' (a checkpoint)")
        if not 0.0 <= self.mask.ratio <= 1.0:
            raise ConfigError(f"mask.ratio must be in [0, 1], got {self.mask.ratio}")
        self._validate_generator()
        if not 0.0 < self.finetune.ratio <= 1.0:
            raise ConfigError(f"finetune.ratio must be in (0, 1], got {self.finetune.ratio}")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas needs two values, got {self.optim.betas}")
        if not 0.0 <= self.ema.decay < 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1), got {self.ema.decay}")
        positive = {
            "mask.patch": self.mask.patch,
            "schedule.iterations": self.schedule.iterations,
            "train.batch_size": self.train.batch_size,
            "train.log_every": self.train.log_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        non_negative = {
            "schedule.warmup": self.schedule.warmup,
            "train.workers": self.train.workers,
            "train.threads": self.train.threads,
            "train.val_every": self.train.val_every,
            "train.save_every": self.train.save_every,
            "train.keep_last": self.train.keep_last,
            "train.grad_clip": self.train.grad_clip,
            "optim.lr": self.optim.lr,
            "schedule.eta_min": self.schedule.eta_min,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if self.data and not isinstance(self.data.get("train"), dict):
            raise ConfigError("data needs a 'train' section (a mapping given to ramir.data.build_dataset)")
        return self

    def _validate_generator(self) -> None:
        """The learned-mask settings: only with ``stage: pretrain_adasam``, which needs them; the
        generator is built on the meta device, so a bad keyword fails here, before any data loads."""
        m = self.mask
        if (self.stage == "pretrain_adasam") != (m.generator is not None):
            raise ConfigError("stage pretrain_adasam trains a mask generator: set mask.generator (adasam)"
                              if m.generator is None else
                              f"mask.generator trains a generator jointly: use stage: pretrain_adasam, "
                              f"not {self.stage}")
        if m.generator is None:
            return
        import torch

        from ramir.adasam import MASK_GENERATORS, create_mask_generator

        _choice("mask.generator", m.generator, tuple(sorted(MASK_GENERATORS)))
        if "mask_ratio" in m.generator_args:
            raise ConfigError("set the generator's mask ratio as mask.ratio, "
                              "not mask.generator_args.mask_ratio")
        if m.patch != 1 or m.per_sample:
            raise ConfigError("mask.patch and mask.per_sample are for random masks; a generator draws its "
                              "own pixels (its scoring patch is mask.generator_args.patch_size)")
        for key, value in (("mask.lr", m.lr), ("mask.prob_weight", m.prob_weight)):
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        try:
            with torch.device("meta"):
                generator = create_mask_generator(m.generator, mask_ratio=m.ratio, **m.generator_args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"mask.generator_args: {first_line(exc)}") from None
        train = self.data.get("train")
        crop = train.get("patch_size") if isinstance(train, dict) else None
        size = getattr(generator, "img_size", None)
        if crop is not None and size is not None and crop != size:
            raise ConfigError(f"data.train.patch_size ({crop}) must equal the generator's img_size ({size}): "
                              f"it scores exactly {size}x{size} crops (set mask.generator_args.img_size)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("base_dir", None)
        return data

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name, stage=self.stage))


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


# ---------------------------------------------------------------------------------------------------
# dict -> dataclass with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML value to the declared type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return copy.deepcopy(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 4e5 iterations
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover - schema bug


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = f"'{prefix}{key}'" if prefix else f"'{key}'"
            raise ConfigError(f"unknown recipe key {where}; valid keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a :class:`Recipe` from a plain mapping (e.g. ``yaml.safe_load`` output)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "_base_"}
    return _from_dict(Recipe, data).validate()


# ---------------------------------------------------------------------------------------------------
# YAML files, inheritance and overrides


APPEND = "+"  # ``sources+: [...]`` in a recipe extends its base's ``sources`` list


def _merge(base: dict[str, Any], top: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, other values replace, and a key spelt with a
    trailing ``+`` appends its list to the base's list of that name. Lists are otherwise replaced
    whole, so without the append form a recipe adding one training source would have to repeat all
    of its base's (and would silently drop any the base gains later)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        name = str(key)
        if name.endswith(APPEND) and len(name) > len(APPEND):
            target = name[: -len(APPEND)]
            at = f"{where}{target}"
            if target in top:
                raise ConfigError(f"recipe sets both '{at}' and '{at}{APPEND}'; keep one")
            if not isinstance(value, list):
                raise ConfigError(f"'{at}{APPEND}' appends a list, got {type(value).__name__}")
            if not isinstance(out.get(target), list):
                raise ConfigError(f"'{at}{APPEND}' appends to the base recipe's list '{at}', "
                                  "but the base has no such list")
            out[target] = out[target] + copy.deepcopy(value)
        elif isinstance(value, dict):
            under = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = _merge(under, value, f"{where}{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a recipe file with its ``_base_`` chain merged, without type checks."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"_base_ cycle: {' -> '.join(str(p) for p in (*_seen, resolved))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
    bases = data.pop("_base_", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, read_recipe_dict(path.parent / base, (*_seen, resolved)))
    return _merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=2e-4`` -> (['optim', 'lr'], 2e-4); the value is read as YAML (lists, numbers, null)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set: invalid key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: invalid value {raw!r}") from exc
    return parts, value


def apply_overrides(
    data: dict[str, Any], overrides: list[str], values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values read as YAML), then ``values`` (dotted key -> value, set
    as they are: a path stays a string) to a recipe mapping (a copy); unknown keys are caught later.

    A numeric component indexes a list: ``data.train.sources.0.root=/photos``.
    """
    data = copy.deepcopy(data)
    settings = [(text, *parse_override(text)) for text in overrides or []]
    settings += [(key, key.split("."), value) for key, value in (values or {}).items()]
    for text, parts, value in settings:
        node: Any = data
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {text}: '{where}' is not an index of a {len(node)}-item list")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {text}: '{'.'.join(parts[:i])}' is not a section")
    return data


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> Recipe:
    """Read a YAML recipe (with ``_base_``), apply ``--set`` overrides and then ``values`` (dotted
    keys, values as they are: what a command's own options set), type-check and validate it.

    Relative data roots are resolved by :mod:`ramir.data` against the recipe's directory; ``init_from``
    and ``finetune.ranking`` (usually given on the command line) against the working directory.
    """
    recipe = recipe_from_dict(apply_overrides(read_recipe_dict(path), overrides or [], values))
    recipe.base_dir = Path(path).resolve().parent
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (written next to the outputs, so a run documents itself)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
