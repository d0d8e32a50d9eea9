"""Training the router of a routed network and assembling the routed network from trained experts.

The router (:class:`ramir.archs.routed.DegradationRouter`) is a classifier: each training source of a
recipe is a class, or several sources share one (``classes`` maps source names to class names), and
cross-entropy on random patches of the degraded inputs teaches it which degradation an image has.
The experts are trained by the ordinary stages (RAM or plain), one recipe each; :func:`assemble`
puts the router and the experts' EMA weights into one checkpoint that ``ramir.load`` restores with.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir.errors import ConfigError


def train_router(
    recipe_path: str | Path,
    source_classes: Mapping[str, str],
    classes: Sequence[str],
    *,
    iterations: int = 1500,
    batch_size: int = 16,
    lr: float = 3e-3,
    width: int = 16,
    seed: int = 0,
    log_every: int = 250,
    init: nn.Module | None = None,
    teacher: nn.Module | None = None,
    distill: float = 0.0,
    new_sources: Sequence[str] = (),
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """A router trained on the sources of ``recipe_path``'s ``data.train`` (patch size from the recipe).

    ``source_classes``: source name -> class name; ``classes``: the class order of the router's outputs.
    ``init``: a trained router to continue (a warm start: new sources taught to a router that already
    knows the others) instead of a fresh one of ``width``.
    ``teacher``, ``distill``, ``new_sources``: keep what a trained router decides while teaching it more.
    A warm start alone drifts: cross-entropy on hard labels moves the probabilities of images it already
    classed right, and the routed network acts on those probabilities (keep threshold, fallback class,
    chain threshold), so decisions on old sources change. With a teacher (usually ``init`` itself: a copy
    is taken and frozen before the first step, leaving the caller's module as it was), patches of every
    source not in ``new_sources`` add ``distill`` times the KL divergence from the teacher's class
    probabilities to the router's; patches of ``new_sources`` learn from their labels alone (the
    teacher's verdict on them is the one being corrected).
    Returns the router (eval mode) and the log (iteration, loss, accuracy of the last ``log_every``).
    """
    from torch.utils.data import DataLoader

    from ramir.archs.routed import DegradationRouter
    from ramir.data import build_dataset
    from ramir.imagespace import normalize
    from ramir.training import load_recipe
    from ramir.training.schedule import WarmupCosine

    if distill < 0 or (distill > 0 and teacher is None):
        raise ConfigError("distillation needs a teacher router and a weight >= 0")
    recipe = load_recipe(recipe_path)
    index = {c: i for i, c in enumerate(classes)}
    names = [s["name"] for s in recipe.data["train"]["sources"]]
    unknown = [n for n in names if source_classes.get(n) not in index]
    if unknown:
        raise ConfigError(f"sources without a router class: {', '.join(unknown)}")
    missing = sorted(set(new_sources) - set(names))
    if missing:
        raise ConfigError(f"new sources not in the recipe: {', '.join(missing)}")
    data = build_dataset(recipe.data["train"], seed=seed, base_dir=recipe.base_dir)
    torch.manual_seed(seed)
    router = DegradationRouter(len(classes), width) if init is None else init
    router.train()
    if teacher is not None:
        teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(router.parameters(), lr=lr)
    schedule = WarmupCosine(optimizer, base_lr=lr, iterations=iterations, warmup=0, eta_min=lr / 100)
    log: list[dict[str, Any]] = []
    step, correct, seen, total_loss = 0, 0, 0, 0.0
    epoch = 0
    while step < iterations:
        data.set_epoch(epoch)
        for batch in DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=True):
            if step >= iterations:
                break
            schedule.apply(step)
            target = torch.tensor([index[source_classes[t]] for t in batch["task"]])
            x = normalize(batch["lq"].clamp(0, 1))
            logits = router(x)
            loss = torch.nn.functional.cross_entropy(logits, target)
            if distill > 0:
                loss = loss + distill * _distillation(logits, teacher, x, batch["task"], new_sources)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
            total_loss += float(loss.detach()) * len(target)
            if step % log_every == 0 or step == iterations:
                log.append({"iteration": step, "loss": total_loss / seen, "accuracy": correct / seen})
                correct, seen, total_loss = 0, 0, 0.0
        epoch += 1
    return router.eval(), log


def _distillation(
    logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, tasks: Sequence[str], new: Sequence[str]
) -> torch.Tensor:
    """Mean KL(teacher || router) over the patches of old sources (zero when the batch has none)."""
    old = torch.tensor([t not in new for t in tasks])
    if not old.any():
        return logits.sum() * 0.0
    with torch.no_grad():
        target = torch.log_softmax(teacher(x[old]), dim=1)
    log_p = torch.log_softmax(logits[old], dim=1)
    return torch.nn.functional.kl_div(log_p, target, log_target=True, reduction="batchmean")


def assemble(
    router: nn.Module,
    classes: Sequence[str],
    class_to_expert: Sequence[int],
    expert_paths: Mapping[str, str | Path],
    *,
    route_size: int = 512,
    keep_threshold: float = 0.0,
    class_bias: Mapping[str, float] | None = None,
) -> nn.Module:
    """A :class:`~ramir.archs.routed.RoutedNetwork` from a trained router and the experts' checkpoints
    (their EMA weights when they have them); the experts must share one architecture and config."""
    from ramir.archs.routed import build_routed
    from ramir.checkpoints import load_checkpoint, load_state_dict_strict

    ckpts = {name: load_checkpoint(path, prefer_ema=True) for name, path in expert_paths.items()}
    specs = {(c.spec.arch, repr(sorted(c.spec.kwargs.items()))) for c in ckpts.values() if c.spec}
    if len(specs) != 1 or any(c.spec is None for c in ckpts.values()):
        raise ConfigError("the experts of a routed network must share one recorded architecture")
    first = next(iter(ckpts.values())).spec
    net = build_routed(
        first.arch,
        first.kwargs,
        classes=list(classes),
        class_to_expert=list(class_to_expert),
        experts=list(ckpts),
        router_width=router.full[0].out_channels,
        route_size=route_size,
        keep_threshold=keep_threshold,
        class_bias=dict(class_bias or {}),
    )
    load_state_dict_strict(net.router, router.state_dict(), "router")
    for expert, ckpt in zip(net.experts, ckpts.values()):
        load_state_dict_strict(expert, ckpt.state_dict, "expert")
    return net.eval()
