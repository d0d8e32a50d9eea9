"""Training for RAM's two stages: masked pre-training and MAC-selected fine-tuning (RAM_SPEC §2, §4),
and RAM++'s pre-training with a jointly trained mask generator (``stage: pretrain_adasam``, RAMPP_SPEC §b).

``pretrain("configs/cpu_tiny_pretrain.yaml")`` or ``Trainer(recipe, model=..., train_set=...).fit()``;
the recipe format is :mod:`ramir.training.config`, the loop :mod:`ramir.training.engine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ramir.errors import ConfigError
from ramir.training.config import PRETRAIN_STAGES, Recipe, load_recipe, recipe_from_dict
from ramir.training.engine import Trainer, TrainResult, latest_state, list_states, train
from ramir.training.stages import FinetuneStage, PretrainStage

__all__ = [
    "ConfigError",
    "FinetuneStage",
    "PretrainStage",
    "Recipe",
    "TrainResult",
    "Trainer",
    "finetune",
    "latest_state",
    "list_states",
    "load_recipe",
    "pretrain",
    "recipe_from_dict",
    "train",
]


def _recipe(recipe: Recipe | str | Path, overrides: list[str] | None, stages: tuple[str, ...]) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            raise ValueError("overrides apply to recipe files; edit the Recipe object instead")
    else:
        recipe = load_recipe(recipe, overrides)
    if recipe.stage not in stages:
        raise ConfigError(f"this recipe is for the {recipe.stage} stage, not {' or '.join(stages)}")
    return recipe


def pretrain(recipe: Recipe | str | Path, overrides: list[str] | None = None, **kwargs: Any) -> TrainResult:
    """Masked-image-modelling pre-training from a recipe (object or YAML path), RAM's or RAM++'s
    (``stage: pretrain_adasam``); see :func:`train`."""
    return train(_recipe(recipe, overrides, PRETRAIN_STAGES), **kwargs)


def finetune(recipe: Recipe | str | Path, overrides: list[str] | None = None, **kwargs: Any) -> TrainResult:
    """Fine-tune the MAC-selected layers from a recipe (object or YAML path); see :func:`train`."""
    return train(_recipe(recipe, overrides, ("finetune",)), **kwargs)
