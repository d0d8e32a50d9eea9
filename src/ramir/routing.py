"""What a routed model does to one image: a chain of experts chosen by the router, or forced by the user.

A routed network (:mod:`ramir.archs.routed`) has a router that names the image's degradation and
experts that each restore one family. A photo often carries several degradations at once (hazy *and*
noisy; shaken *and* saved as JPEG), so one expert per image leaves the rest. The **chain** here routes,
restores, and routes the result again, until the router finds the image clean, would call an expert a
second time, is unsure, would take a step in an order the model refuses (``after``), or ``max_steps``
are done. Every step is recorded in a :class:`Decision`, which
``ramir restore -v``, the web page and ``restorer.route`` report.

The policy is a pure function of two callables (the router's probabilities and an expert's forward), so
it runs the same over PyTorch or onnxruntime, and is testable with stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ramir.errors import RamirError

NONE = "none"  # the name that forces "leave the image unchanged"


@dataclass(frozen=True)
class Step:
    """One restoration applied: the ``expert``, the router's class ``label`` that chose it and its
    probability ``p`` (1.0 for a step the user forced)."""

    expert: str
    label: str
    p: float


@dataclass(frozen=True)
class Decision:
    """What was done to one image, in order; ``probabilities``: the router's view of the input."""

    steps: tuple[Step, ...]
    probabilities: dict[str, float] = field(default_factory=dict)
    forced: bool = False
    stop: str = ""  # why the chain ended: clean, repeat, unsure, order, max-steps (empty when forced)

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(s.expert for s in self.steps)

    @property
    def summary(self) -> str:
        """A short key for counting decisions in a run summary: ``noise+jpeg``, ``unchanged``."""
        return "+".join(self.experts) if self.steps else "unchanged"

    def describe(self) -> str:
        """One line for a person: ``noise (p 0.93) -> tone (p 0.71)`` or ``left unchanged: ...``."""
        if not self.steps:
            if self.forced:
                return "left unchanged (as asked: --expert none)"
            clean = max((p for c, p in self.probabilities.items() if c == "clean"), default=None)
            extra = f" (p = {clean:.2f})" if clean is not None else ""
            return f"left unchanged: looks clean{extra}"
        if self.forced:
            return " -> ".join(s.expert for s in self.steps) + " (as asked)"
        return " -> ".join(f"{s.expert} (p {s.p:.2f})" for s in self.steps)


def parse_experts(spec: str | Sequence[str] | None, names: Sequence[str]) -> list[str] | None:
    """``"jpeg,noise"`` / ``["jpeg", "noise"]`` / ``"none"`` -> a list of expert names (``[]`` for none),
    None for "let the router choose"; an unknown name is one clear error listing the names."""
    if spec is None:
        return None
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if not items:
        raise RamirError(f"--expert needs a name: one of {', '.join([*names, NONE])}")
    if items == [NONE]:
        return []
    unknown = [s for s in items if s not in names]
    if unknown or NONE in items:
        bad = unknown[0] if unknown else NONE
        raise RamirError(
            f"unknown expert {bad!r}: choose from {', '.join(names)} (several in order with commas, "
            f"e.g. {names[0]},{names[-1]}), or {NONE}"
        )
    return items


def run_chain(
    x: object,
    *,
    route: Callable[[object], tuple[dict[str, float], str]],
    expert_of: Callable[[str], str | None],
    apply: Callable[[str, object], object],
    max_steps: int = 2,
    threshold: float = 0.0,
    after: Mapping[str, Sequence[str]] | None = None,
) -> tuple[object, Decision]:
    """Route, restore, route again. ``route(x)`` gives the class probabilities and the chosen class;
    ``expert_of(label)`` the expert restoring a class (None: leave it); ``apply(expert, x)`` restores.
    After the first step a further step needs the chosen class's probability to reach ``threshold``
    (doubt after a restoration more often means the expert's own output looks odd to the router than a
    second degradation), and no expert runs twice. ``after`` maps an expert to the experts it may follow
    as a later step (an expert not named there may follow any): a restoration leaves traces the router
    can mistake for another degradation, e.g. a derained or deblurred photo read as hazy, where the tone
    expert then only does harm."""
    steps: list[Step] = []
    first: dict[str, float] = {}
    stop = "max-steps"
    for i in range(max(1, int(max_steps))):
        probs, label = route(x)
        if i == 0:
            first = probs
        expert = expert_of(label)
        if expert is None:
            stop = "clean"
            break
        if expert in {s.expert for s in steps}:
            stop = "repeat"
            break
        if i > 0 and probs.get(label, 0.0) < threshold:
            stop = "unsure"
            break
        if i > 0 and after and expert in after and steps[-1].expert not in after[expert]:
            stop = "order"
            break
        x = apply(expert, x)
        steps.append(Step(expert, label, float(probs.get(label, 0.0))))
    return x, Decision(tuple(steps), first, False, stop)


def run_forced(
    x: object, experts: Sequence[str], apply: Callable[[str, object], object]
) -> tuple[object, Decision]:
    """Apply the user's ``experts`` in order, no router involved."""
    for name in experts:
        x = apply(name, x)
    return x, Decision(tuple(Step(n, "", 1.0) for n in experts), {}, True, "")
