"""How the networks execute: one explicit, documented choice instead of guessing from hooks.

The transformer networks (RAM-SwinIR, PromptIR and the Restormer family) have two ways to run the same
numbers:

* **fast** (default): fused attention, cached masks and token orders, and, at CPU inference (no
  autograd), blocks run on pieces of the map (SwinIR: rectangles of windows; PromptIR: bands of rows)
  with residual sums added in place, so large intermediates stay in cache;
* **observed**: every module runs once on its whole input and its output is a fresh tensor, in the
  reference's layout, so that forward hooks see exactly what the reference's hooks see. MAC
  (:mod:`ramir.mac`), the per-layer golden tests and any tool reading layer outputs run inside
  :func:`observed_execution`. Tracing and compiling (``torch.jit``, ``torch.compile``, ONNX export)
  always take it; so does a module with a hook of its own on its tree (a safety net for tools that
  attach hooks without entering the context; torch's process-wide hooks are not consulted).

A third, **literal** mode (:func:`straightforward_path`: explicit softmax, per-window Python loops) is
the reference's arithmetic written out; it also observes whole tensors, and exists so that tests and
benchmarks can compare the fast path with it on the same weights.

The choice lives in a :class:`contextvars.ContextVar`: it is per thread (and per asyncio task), set
by a context manager and restored on exit, never a process-wide flag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn

MODES = ("fast", "observed", "literal")
_MODE: ContextVar[str] = ContextVar("ramir_execution_mode", default="fast")


@contextlib.contextmanager
def execution_mode(mode: str) -> Iterator[None]:
    """Run the networks in ``mode`` ("fast", "observed" or "literal") within this context."""
    if mode not in MODES:
        raise ValueError(f"unknown execution mode {mode!r}; use one of {', '.join(MODES)}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def observed_execution() -> contextlib.AbstractContextManager[None]:
    """Within this context every layer runs once on whole tensors, as hooks must see it (MAC)."""
    return execution_mode("observed")


@contextlib.contextmanager
def straightforward_path(enabled: bool = True) -> Iterator[None]:
    """Within this context the networks use their slow, literal implementation (tests, benchmarks)."""
    with execution_mode("literal" if enabled else "fast"):
        yield


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def current_mode() -> str:
    """The execution mode of this thread. Code being compiled is traced once for every mode: it gets
    the fast kernels on whole tensors ("observed"), and the context variable is not read there
    (TorchDynamo cannot trace a ContextVar lookup without breaking the graph)."""
    return "observed" if _tracing() else _MODE.get()


def straightforward_path_enabled() -> bool:
    return current_mode() == "literal"


def whole_tensors_required() -> bool:
    """True when no module may run on pieces of its input or write into a tensor it returned: in the
    observed and literal modes, and while tracing or compiling (a trace must see the computation)."""
    return current_mode() != "fast"


def observed(module: nn.Module) -> bool:
    """Whether this forward of ``module`` must give hooks whole tensors: in observed or literal
    execution, while tracing, and, as a safety net for tools that attach hooks without entering
    :func:`observed_execution`, when a hook sits on the module's tree. Only otherwise may a module run
    its children on pieces of the map."""
    return whole_tensors_required() or any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in module.modules()
    )
