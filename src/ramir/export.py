"""Export a network to ONNX, wrapped so the graph maps [0, 1] RGB to [0, 1] RGB, and check it.

Two modes: a fixed tile size (TorchScript-based exporter: fast, and exact for every network because
window masks and padding are traced for that size) or dynamic height/width (``torch.export``-based
exporter; sizes must then be multiples of the network's ``size_multiple``, which the ONNX runner pads to).
Every export is verified against PyTorch with onnxruntime when it is installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ramir._version import __version__
from ramir.archs import architecture_of, network_multiple, network_spec
from ramir.errors import RamirError
from ramir.fileio import atomic_path
from ramir.imagespace import ImageSpaceModel


@dataclass
class ExportReport:
    path: Path
    tile: int | None
    dynamic: bool
    max_abs_diff: float | None  # vs PyTorch on random inputs; None when onnxruntime is missing
    checked_sizes: list[tuple[int, int]]


def export_onnx(
    network: nn.Module,
    path: str | Path,
    *,
    tile: int = 256,
    dynamic: bool = False,
    opset: int = 18,
    verify: bool = True,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``network`` (normalised space) as an ONNX graph on [0, 1] images of shape (N, 3, H, W)."""
    try:
        import onnx  # noqa: F401 - needed to write the metadata (and by the dynamic exporter)
    except ImportError:
        raise RamirError("ONNX export needs the onnx package: pip install 'ramir[onnx]'") from None
    arch = architecture_of(network)
    if arch is not None and not arch.exportable:
        raise RamirError(f"{arch.title} networks cannot be exported to ONNX")
    multiple = network_multiple(network)
    if tile % multiple:
        raise RamirError(f"tile {tile} is not a multiple of the network's size multiple {multiple}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise RamirError(f"{path} exists; pass --overwrite to replace it")
    wrapped = ImageSpaceModel(network).eval()
    example = torch.rand(1, 3, tile, tile)
    with atomic_path(path, overwrite=True) as tmp, warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        if dynamic:
            dim_h = torch.export.Dim("height", min=multiple, max=16384)
            dim_w = torch.export.Dim("width", min=multiple, max=16384)
            torch.onnx.export(wrapped, (example,), str(tmp), dynamo=True, opset_version=opset,
                              input_names=["image"], output_names=["restored"], verbose=False,
                              dynamic_shapes={"x01": {2: dim_h, 3: dim_w}})
        else:
            torch.onnx.export(wrapped, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["restored"])
        try:
            _attach_metadata(tmp, network, tile=None if dynamic else tile, multiple=multiple)
        finally:
            _remove_sidecar(tmp)
    sizes = [(tile, tile)] + ([(multiple * 3, multiple * 5)] if dynamic else [])
    try:
        diff = verify_onnx(path, network, sizes) if verify else None
        if diff is not None and diff > tolerance:
            raise RamirError(
                f"ONNX output differs from PyTorch by {diff:.2e} (> {tolerance:.0e}); not trusted"
            )
    except BaseException:
        path.unlink(missing_ok=True)  # a graph that fails its check is not left where a user would use it
        raise
    return ExportReport(path, None if dynamic else tile, dynamic, diff, sizes)


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The torch.export-based exporter and the ONNX IR it builds log lines such as "torchvision is not
    installed" or "Attribute type is ambiguous" at WARNING level; they say nothing about this export
    (which is verified against PyTorch afterwards), so users should not see them."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _remove_sidecar(path: Path) -> None:
    """The torch.export-based exporter writes the weights beside the graph (``NAME.data``);
    :func:`_attach_metadata` has folded them into the graph file, so the side file is only litter."""
    with contextlib.suppress(FileNotFoundError):
        path.with_name(path.name + ".data").unlink()


def _attach_metadata(path: Path, network: nn.Module, *, tile: int | None, multiple: int) -> None:
    """Provenance in the graph's metadata, and the weights inside the one file (onnx loads any
    external data the exporter wrote and saves it inline)."""
    import onnx  # the torch.export-based exporter needs it too: installed with the `onnx` extra

    model = onnx.load(str(path))
    spec = network_spec(network)
    meta = {
        "ramir_version": __version__,
        "arch": spec.arch if spec else type(network).__name__,
        "config": json.dumps(spec.kwargs if spec else {}),
        "input": "RGB float32 (N, 3, H, W) in [0, 1]",
        "size_multiple": str(multiple),
        "tile": str(tile) if tile else "dynamic",
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def verify_onnx(
    path: str | Path, network: nn.Module, sizes: list[tuple[int, int]], seed: int = 0
) -> float | None:
    """Largest absolute difference between onnxruntime and PyTorch over random images of ``sizes``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapped = ImageSpaceModel(network).eval()
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=g)
        (y_onnx,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.inference_mode():
            y_torch = wrapped(x).numpy()
        worst = max(worst, float(np.abs(y_onnx - y_torch).max()))
    return worst
