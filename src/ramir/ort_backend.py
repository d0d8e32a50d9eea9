"""Run a network with onnxruntime instead of PyTorch (``ramir restore --backend onnxruntime``).

The network is exported once to an ONNX graph with dynamic height and width (``ramir.export``) and cached
under ``$RAMIR_CACHE`` (default ``~/.cache/ramir/onnx``), keyed by a hash of its architecture and weights,
so later runs start at once. The runner keeps the PyTorch network's contract — ImageNet-normalised in and
out, any height and width — by reflect-padding to the network's size multiple (what the networks do
inside) and cropping back. CPU and fp32 only: that is where onnxruntime can beat eager PyTorch;
``docs/performance.md`` says by how much for the default model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ramir._version import __version__
from ramir.errors import RamirError, first_line
from ramir.imagespace import denormalize, normalize

log = logging.getLogger(__name__)
# what the exported graph computes besides the weights; a new value re-exports every cached graph
# ("folded-1": blocks in their inference form, ramir.archs.fold_for_inference)
GRAPH_FORM = "folded-1"
MISSING = "the onnxruntime backend needs onnx and onnxruntime: pip install 'ramir[onnx]'"


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$RAMIR_CACHE/onnx``, else ``$XDG_CACHE_HOME/ramir/onnx``."""
    root = os.environ.get("RAMIR_CACHE")
    if root:
        return Path(root).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "ramir" / "onnx"


def network_fingerprint(network: nn.Module) -> str:
    """A hash of what determines the exported graph: architecture, weights and exporter versions."""
    from ramir.archs import network_spec

    spec = network_spec(network)
    h = hashlib.sha256()
    header = {
        "arch": spec.arch if spec else type(network).__name__,
        "config": spec.kwargs if spec else None,
        "settings": getattr(network, "graph_settings", None),  # e.g. a GuidedRefine's radius and eps
        "form": GRAPH_FORM,
        "torch": torch.__version__,
        "ramir": __version__,
    }
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _require_onnxruntime():
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
    except ImportError as exc:
        raise RamirError(MISSING) from exc
    return onnxruntime


class OnnxRuntimeNetwork:
    """A callable with the network's contract (normalised (N, 3, H, W) -> normalised) run by onnxruntime."""

    def __init__(
        self,
        network: nn.Module,
        *,
        threads: int | None = None,
        cache: Path | None = None,
        announce: Callable[[str], None] | None = None,
        label: str = "the network",
    ) -> None:
        """``announce`` is told (one line each) when a graph is exported, which takes seconds to a minute
        once per network, and when it is ready: without it the first restore would look stuck."""
        from ramir.archs import network_multiple
        from ramir.export import export_onnx

        ort = _require_onnxruntime()
        self.multiple = network_multiple(network)
        self.export_seconds = 0.0
        folder = cache if cache is not None else cache_dir()
        self.path = folder / f"{network_fingerprint(network)}.onnx"
        say = announce or log.info
        if not self.path.is_file():
            say(f"ramir: exporting {label} to ONNX for onnxruntime (once; cached in {folder})")
            start = time.perf_counter()
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RamirError(f"cannot create the ONNX cache {folder} ({exc}); set RAMIR_CACHE") from exc
            tile = self.multiple * max(1, -(-64 // self.multiple))
            try:
                export_onnx(network.cpu().eval(), self.path, tile=tile, dynamic=True, overwrite=True)
            except RamirError:
                raise
            except OSError as exc:
                raise RamirError(f"cannot write the ONNX cache in {folder} ({exc}); set RAMIR_CACHE") from exc
            except Exception as exc:  # torch.export cannot trace every network with symbolic sizes
                raise RamirError(
                    "the onnxruntime backend needs an ONNX graph with dynamic image sizes, and this network "
                    f"({type(network).__name__}) cannot be exported so ({first_line(exc)}); "
                    "use --backend torch"
                ) from exc
            self.export_seconds = time.perf_counter() - start
            say(f"ramir: {label} exported in {self.export_seconds:.1f} s")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or stale cache file: say which, so it can be deleted
            raise RamirError(f"{self.path}: cannot load the cached ONNX graph ({exc}); delete it") from exc
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x01 = denormalize(x.to("cpu", torch.float32)).contiguous()
        (y01,) = self.session.run(None, {self.input_name: x01.numpy()})
        return normalize(torch.from_numpy(y01))[..., :h, :w]
