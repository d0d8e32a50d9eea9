"""From scores to the layers RAM fine-tunes: rankings, their JSON files, selection and freezing.

Stage 2 ends with a ranking (RAM_SPEC §3): layer names by descending score, saved with what made them
(:func:`rank_layers` computes it by MAC, integrated gradients or at random). Stage 3 fine-tunes only
the top of it (RAM_SPEC §4): the first ``int(n_layers * ratio)`` layers (RAM-SwinIR 0.1, RAM-PromptIR
0.3), everything else frozen. A parameter is trainable iff its *direct* parent module is selected, so
selecting ``attn`` (SwinIR's WindowAttention) trains its relative-position table only, not its
``qkv``/``proj`` children.

Layer names never carry a ``module.`` prefix: ``freeze_except`` strips wrapper prefixes before matching,
so it behaves the same on a plain model and on ``DistributedDataParallel(model)`` (the reference matched
the prefixed names, and without DDP froze every parameter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir.errors import ConfigError
from ramir.fileio import atomic_path
from ramir.layers import unwrap

__all__ = [
    "METHODS",
    "LayerRanking",
    "canonical_name",
    "freeze_except",
    "load_ranking",
    "rank_layers",
    "ranking_from_scores",
    "save_ranking",
    "select_layers",
    "trainable_fraction",
]

RANKING_FORMAT = "ramir-layer-ranking"
METHODS = ("mac", "ig", "random")


# --------------------------------------------------------------------------------------------------
# Ranking layers: one call for MAC and the paper's two baselines
# --------------------------------------------------------------------------------------------------


@dataclass
class LayerRanking:
    """Scores of every attributable layer (in layer order) and how they were made."""

    scores: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[str]:
        """Layer names, most important first."""
        return ranking_from_scores(self.scores)

    def top(self, ratio: float, *, by: str = "count", model: nn.Module | None = None) -> list[str]:
        """The layers RAM would fine-tune at ``ratio`` (see :func:`select_layers`)."""
        return select_layers(self.ranking, ratio, by=by, model=model)

    def save(self, path: str | Path, model: nn.Module, images_info: list | None = None) -> None:
        save_ranking(path, self.scores, model, self.settings, images_info)


def rank_layers(
    model: nn.Module,
    images: torch.Tensor | None = None,
    method: str = "mac",
    *,
    steps: int = 200,
    ratio: float = 0.5,
    sharpness: float = 1e4,
    batch_steps: int | str | None = "auto",
    seed: int = 0,
    order: str = "random",
    mask_generator: nn.Module | None = None,
    baseline: torch.Tensor | float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> LayerRanking:
    """Rank the attributable layers of ``model`` on ImageNet-normalised ``images`` (N, 3, H, W).

    ``method``: "mac" (Mask Attribute Conductance, RAM's), "ig" (conductance along the straight line
    from ``baseline``, the paper's integrated-gradients baseline) or "random" (a seeded random order;
    no images needed). ``batch_steps="auto"`` evaluates one path point per forward pass on the CPU,
    where batching does not pay, and on a GPU as many as half its free memory allows, up to 32.
    ``seed`` draws MAC's pixel orders (``order="random"``) or the random scores. The model runs where
    its parameters are; ``progress`` is called with the number of path points done.
    """
    from ramir.mac import LinearPathConductance, MaskAttributeConductance, random_scores

    if method not in METHODS:
        raise ValueError(f"unknown ranking method {method!r}; use one of {', '.join(METHODS)}")
    settings: dict[str, Any] = {"method": method, "seed": seed}
    if method == "random":
        return LayerRanking(random_scores(model, seed=seed), settings)
    if images is None:
        raise ValueError(f"method {method!r} needs images")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    batch = auto_batch_steps(model, images[:1]) if batch_steps == "auto" else batch_steps
    settings.update(steps=steps, images=len(images), size=int(images.shape[-1]), batch_steps=batch)
    if not isinstance(baseline, torch.Tensor) and baseline != 0.0:
        settings["baseline"] = float(baseline)
    if method == "mac":
        settings.update(ratio=ratio, sharpness=sharpness, order=order)
        scores = MaskAttributeConductance(model, progress=progress).attribute(
            images, steps=steps, ratio=ratio, sharpness=sharpness, batch_steps=batch,
            generator=torch.Generator().manual_seed(seed), order=order, mask_generator=mask_generator,
            baseline=baseline,
        )
    else:
        scores = LinearPathConductance(model, progress=progress).attribute(
            images, steps=steps, batch_steps=batch, baseline=baseline
        )
    return LayerRanking(scores, settings)


def auto_batch_steps(model: nn.Module, image: torch.Tensor, device: torch.device | None = None) -> int:
    """Path points per forward pass where ``model`` runs.

    On a GPU, as many as half the free memory allows, up to 32: one 64x64 step leaves it idle, and
    batching paid 4.5x with 8 and 6.95x with 32 points per pass there (H200). On the CPU one point per
    pass: a single one already keeps the cores busy, so batching measured 0.93-1.05x while it
    tripled peak RSS (docs/performance.md).
    """
    from ramir import devices
    from ramir.mac import suggest_batch_steps

    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cpu":
        return 1
    free = devices.free_memory(device)
    if free is None:
        return 1
    return suggest_batch_steps(model, image, free // 2, limit=32)


# --------------------------------------------------------------------------------------------------
# Rankings: scores -> ordered layer names, saved with everything needed to reproduce them
# --------------------------------------------------------------------------------------------------



def ranking_from_scores(scores: Mapping[str, float]) -> list[str]:
    """Layer names by descending score; ties keep the layer order of ``scores`` (stable)."""
    bad = [name for name, s in scores.items() if not math.isfinite(s)]
    if bad:
        raise ValueError(f"non-finite score for layer(s): {', '.join(bad[:5])}")
    names = list(scores)
    order = sorted(range(len(names)), key=lambda i: -scores[names[i]])
    return [names[i] for i in order]


def save_ranking(
    path: str | Path,
    scores: Mapping[str, float],
    model: nn.Module,
    settings: Mapping[str, Any],
    images_info: list | None = None,
) -> None:
    """Write the ranking as JSON (atomically): ranked names, and per layer its class, score and rank.

    ``settings`` records how the scores were made (method, steps, ratio, sharpness, images, seed, ...).
    """
    from ramir._version import __version__
    from ramir.archs import network_spec

    net = unwrap(model)
    ranking = ranking_from_scores(scores)
    rank_of = {name: r for r, name in enumerate(ranking, start=1)}
    modules = dict(net.named_modules())
    layers = [
        {
            "index": i,
            "name": name,
            "class": type(modules[name]).__name__ if name in modules else None,
            "score": float(score),
            "rank": rank_of[name],
        }
        for i, (name, score) in enumerate(scores.items())
    ]
    spec = network_spec(model)
    document = {
        "format": RANKING_FORMAT,
        "ramir_version": __version__,
        "network": spec.to_dict() if spec is not None else None,
        "settings": dict(settings),
        "images": images_info,
        "ranking": ranking,
        "layers": layers,
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")


def load_ranking(path: str | Path) -> list[str]:
    """Layer names, most important first, from :func:`save_ranking` JSON or a one-name-per-line file
    (the reference's ``filter_name.txt``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"ranking file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read ranking {path}: {exc}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ranking {path} is not valid JSON: {exc}") from None
        ranking = document.get("ranking") if isinstance(document, dict) else None
        if not isinstance(ranking, list) or not all(isinstance(n, str) for n in ranking):
            raise ConfigError(f"{path} is not a ramir layer ranking (no 'ranking' list of names)")
    else:
        ranking = [line.strip() for line in text.splitlines() if line.strip()]
    if not ranking:
        raise ConfigError(f"ranking {path} is empty")
    if len(set(ranking)) != len(ranking):
        raise ConfigError(f"ranking {path} lists a layer more than once")
    return ranking


# --------------------------------------------------------------------------------------------------
# Selection and freezing (stage 3)
# --------------------------------------------------------------------------------------------------

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
