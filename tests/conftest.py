"""Shared test helpers: fixture loading and the deterministic weight rule of the reference fixtures."""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"

# RAMIR_TEST_THREADS, else OMP_NUM_THREADS (so that `OMP_NUM_THREADS=1 pytest` runs on one), else 2
torch.set_num_threads(int(os.environ.get("RAMIR_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or "2"))

GOLDEN_LOG = os.environ.get("RAMIR_GOLDEN_LOG")  # benchmarks/golden_spread.py: where within() records


def within(comparison: str, error: float, bound: float) -> None:
    """A golden or equivalence comparison: its measured ``error`` must be at most ``bound``.

    Every bound is the largest error measured across instruction sets (``ATEN_CPU_CAPABILITY`` default,
    avx2, avx512) and 1 or 2 threads, times a margin, both written beside it (docs/robustness.md has the
    table). Under ``RAMIR_GOLDEN_LOG=FILE`` each comparison is also appended to FILE, one JSON object a
    line, which is how ``benchmarks/golden_spread.py`` measures them."""
    if GOLDEN_LOG:
        with open(GOLDEN_LOG, "a") as fh:
            fh.write(json.dumps({"comparison": comparison, "error": float(error), "bound": bound}) + "\n")
    assert error <= bound, f"{comparison}: error {error:.3g} above its bound {bound:.3g}"


def load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def load_tensors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name))


def apply_weight_rule(model: torch.nn.Module) -> None:
    """Fill every parameter with 0.1*sin(0.7*arange(n) + crc32(name) % 997) (fixtures README §1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = p.numel()
            c = zlib.crc32(name.encode("utf-8")) % 997
            v = 0.1 * np.sin(0.7 * np.arange(n, dtype=np.float64) + c)
            p.copy_(torch.from_numpy(v.astype(np.float32).reshape(p.shape)))


@pytest.fixture(scope="session")
def forward_inputs() -> dict[str, torch.Tensor]:
    return load_tensors("forward_inputs.safetensors")


@pytest.fixture
def no_default_model(monkeypatch) -> None:
    """A build without embedded weights: the file the package's default model is looked up under
    (``ramir.inference.DEFAULT_WEIGHTS`` in ``ramir/weights/``) points at a name that does not exist,
    so the real lookup (``default_weights()``) finds nothing."""
    import ramir.inference

    monkeypatch.setattr(ramir.inference, "DEFAULT_WEIGHTS", "no-such-default-model.safetensors")
    assert ramir.inference.default_weights() is None


def rel_close(a: float, b: float, rtol: float) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def forward_recording(
    model: torch.nn.Module, x: torch.Tensor, record: Callable[[torch.Tensor], Any]
) -> tuple[torch.Tensor, list[tuple[str, Any]]]:
    """``model(x)`` without gradients, with a forward hook on every attributable layer keeping
    ``(name, record(output))`` in firing order (the golden per-layer comparisons), in observed
    execution so that every layer runs once on its whole input."""
    from ramir.archs.common import observed_execution
    from ramir.layers import attributable_layers

    records: list[tuple[str, Any]] = []
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: records.append((name, record(out)))
        )
        for name in attributable_layers(model)
    ]
    try:
        with torch.no_grad(), observed_execution():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, records


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that calls the CLI in-process with ``--threads N`` changes torch's global thread count; put
    it back after every test, so later tests run (and time, and round) with the suite's setting."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
