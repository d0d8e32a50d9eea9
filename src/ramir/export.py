"""Export a network to ONNX, wrapped so the graph maps [0, 1] RGB to [0, 1] RGB, and check it.

Two modes: a fixed tile size (TorchScript-based exporter: fast, and exact for every network because
window masks and padding are traced for that size) or dynamic height/width (``torch.export``-based
exporter; sizes must then be multiples of the network's ``size_multiple``, which the ONNX runner pads to).
Every export is verified against PyTorch with onnxruntime when it is installed. The graph holds the
network's inference form (``ramir.archs.fold_for_inference``), checked against the network as trained.
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
from ramir.archs import architecture_of, fold_for_inference, network_multiple, network_spec
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
    fold: bool = True,
) -> ExportReport:
    """Write ``network`` (normalised space) as an ONNX graph on [0, 1] images of shape (N, 3, H, W).

    ``fold``: export the inference form (:func:`ramir.archs.fold_for_inference`), the default; False
    writes the network's blocks as trained (``benchmarks/fold_speed.py`` compares the two)."""
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
    # the graph computes the inference form (e.g. NAF blocks with their norms folded away: faster, the
    # same function); the check below compares it with the network as trained
    wrapped = ImageSpaceModel(fold_for_inference(network) if fold else network).eval()
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


# ------------------------------------------------------------------------------------- routed model
class _RouterGraph(nn.Module):
    """The router of a routed network on [0, 1] RGB: class probabilities with the priors applied
    (what :meth:`RoutedNetwork.decide` turns into a choice; the crop is the caller's)."""

    def __init__(self, routed: nn.Module) -> None:
        super().__init__()
        from ramir.imagespace import normalize

        self.router, self._normalize = routed.router, normalize
        bias = [routed.class_bias.get(c, 0.0) for c in routed.classes]
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.router(self._normalize(x01)) + self.bias, dim=1)


@dataclass
class RoutedExport:
    manifest: Path
    graphs: dict[str, Path]  # "router" and each expert's name -> its ONNX file
    parity: dict[str, float] | None  # max |onnx - torch| per expert over the check images; None unchecked
    decisions_agree: int | None  # check images whose chain matched PyTorch's
    checked: int


def routed_paths(out: str | Path, names: list[str]) -> tuple[Path, dict[str, Path]]:
    """Where ``ramir export ROUTED -o d/model.onnx`` writes: ``d/model.json`` (the manifest),
    ``d/model.router.onnx`` and ``d/model.expert-NAME.onnx``."""
    out = Path(out)
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    graphs = {"router": out.with_name(f"{stem}.router.onnx")}
    graphs.update({n: out.with_name(f"{stem}.expert-{n}.onnx") for n in names})
    return out.with_name(f"{stem}.json"), graphs


def export_routed(
    network: nn.Module, out: str | Path, *, opset: int = 18, verify: bool = True, overwrite: bool = False,
    tolerance: float = 1e-4,
) -> RoutedExport:
    """Write a routed network as ONNX graphs (router, every expert; dynamic sizes) and a JSON manifest of
    its decision rules, so that :func:`run_exported` — onnxruntime and numpy alone — restores like
    ``ramir restore``. Verified on check images of every class the router knows: the same chain of
    experts, outputs within ``tolerance``."""
    try:
        import onnx
    except ImportError:
        raise RamirError("ONNX export needs the onnx package: pip install 'ramir[onnx]'") from None
    names = list(network.expert_names)
    manifest_path, graphs = routed_paths(out, names)
    existing = [p for p in [manifest_path, *graphs.values()] if p.exists()]
    if existing and not overwrite:
        raise RamirError(f"{existing[0]} exists; pass --overwrite to replace it")
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    multiple = int(network.size_multiple)
    written: list[Path] = []
    try:
        router = _RouterGraph(network).eval()
        with atomic_path(graphs["router"], overwrite=True) as tmp, warnings.catch_warnings(), \
                _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            dim_h = torch.export.Dim("height", min=8, max=16384)
            dim_w = torch.export.Dim("width", min=8, max=16384)
            torch.onnx.export(router, (torch.rand(1, 3, 96, 160),), str(tmp), dynamo=True,
                              opset_version=opset, input_names=["image"], output_names=["probabilities"],
                              verbose=False, dynamic_shapes={"x01": {2: dim_h, 3: dim_w}})
            try:
                import onnx

                onnx.save(onnx.load(str(tmp)), str(tmp))  # the weights inside the one file
            finally:
                _remove_sidecar(tmp)
        written.append(graphs["router"])
        for k, name in enumerate(names):  # each as it restores (with its guided refinement, if any)
            export_onnx(network.expert_module(k), graphs[name], tile=multiple * 8, dynamic=True, opset=opset,
                        verify=verify, overwrite=True)
            written.append(graphs[name])
        manifest = {
            "format": "ramir-routed-onnx/1",
            "ramir_version": __version__,
            "input": "RGB float32 (1, 3, H, W) in [0, 1]; every graph returns the same layout",
            "router": graphs["router"].name,
            "router_output": "class probabilities, the priors (class_bias) already added to the logits",
            "classes": list(network.classes),
            "class_to_expert": [names[k] if k >= 0 else None for k in network.class_to_expert],
            "experts": {n: graphs[n].name for n in names},
            "class_bias": dict(network.class_bias),
            "keep_threshold": float(network.keep_threshold),
            "doubt_experts": getattr(network, "doubt_experts", None),
            "doubt_floor": float(getattr(network, "doubt_floor", 0.0)),
            "route_size": int(network.route_size),
            "crop": "centre route_size x route_size (at most), its corner on the 8-pixel grid",
            "size_multiple": multiple,
            "padding": "reflect-pad the bottom/right to a multiple of size_multiple, crop back",
            "max_steps": int(getattr(network, "max_steps", 1)),
            "chain_threshold": float(getattr(network, "chain_threshold", 0.0)),
            "chain_after": dict(getattr(network, "chain_after", None) or {}),
            "scale_check": int(getattr(network, "scale_check", 0)),
            "scale_threshold": float(getattr(network, "scale_threshold", 0.5)),
            "scale_classes": list(getattr(network, "scale_classes", ["blur", "motion"])),
            "scale_restore": bool(getattr(network, "scale_restore", False)),
            "scale_rule": "when the short side is at least 2 scale_check (0: never), route the whole "
                          "image shrunk by area averaging to that short side too; if its scale_classes "
                          "together are below scale_threshold, zero them in the native-resolution "
                          "probabilities and renormalise, before the rule below; with scale_restore, "
                          "the experts of scale_classes run on that shrunk image and their change, "
                          "enlarged (bicubic), is added to the image",
            "rule": "choose the most probable class; a class whose expert is null needs keep_threshold, "
                    "else the most probable class whose expert is in doubt_experts (null: any expert) "
                    "and whose p reaches doubt_floor (none there: leave the image); apply it, route "
                    "again, up to max_steps; stop on a null expert, an expert already applied, or "
                    "(after the first) p < chain_threshold or an expert named in chain_after whose "
                    "list lacks the expert just applied",
        }
        with atomic_path(manifest_path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")
        written.append(manifest_path)
        parity = agree = None
        checked = 0
        if verify:
            parity, agree, checked = _check_routed(network, manifest_path, tolerance)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return RoutedExport(manifest_path, graphs, parity, agree, checked)


def run_exported(
    manifest: str | Path, rgb01: np.ndarray, sessions: dict | None = None
) -> tuple[np.ndarray, list[str]]:
    """Restore an (H, W, 3) float32 [0, 1] image with an exported routed model, by onnxruntime and numpy
    alone (the reference for docs/export.md's short version); returns the image and the experts applied."""
    import onnxruntime as ort

    # numpy only: the same crop, second look and discount as RoutedNetwork.decide
    from ramir.archs.routed import centre_crop, choose_class, discount_scale, restore_small, second_look
    from ramir.routing import run_chain

    path = Path(manifest)
    m = json.loads(path.read_text())
    if sessions is None:
        sessions = {}

    def session(file: str):
        if file not in sessions:
            sessions[file] = ort.InferenceSession(str(path.parent / file), providers=["CPUExecutionProvider"])
        return sessions[file]

    classes, to_expert = m["classes"], m["class_to_expert"]
    side = int(m.get("scale_check", 0))
    small_experts = {to_expert[classes.index(c)] for c in m.get("scale_classes", []) if c in classes} - {None}

    def large(x: np.ndarray) -> bool:  # RoutedNetwork.looks_twice
        return bool(side) and min(x.shape[-2:]) >= 2 * side

    def route(x: np.ndarray) -> tuple[dict[str, float], str]:
        p = session(m["router"]).run(None, {"image": centre_crop(x, m["route_size"])})[0][0]
        if large(x):
            small = centre_crop(second_look(x, side), m["route_size"])
            q = session(m["router"]).run(None, {"image": small})[0][0]
            struck = [classes.index(c) for c in m["scale_classes"]]
            p = np.asarray(discount_scale(p, q, struck, m["scale_threshold"]), dtype=np.float32)
        best = choose_class(p.tolist(), to_expert, m["keep_threshold"], m.get("doubt_experts"),
                            m.get("doubt_floor", 0.0))
        return {c: float(q) for c, q in zip(classes, p, strict=True)}, classes[best]

    def apply(name: str, x: np.ndarray) -> np.ndarray:
        if m.get("scale_restore") and name in small_experts and large(x):
            return np.clip(restore_small(x, side, lambda a: native(name, a)), 0.0, 1.0).astype(np.float32)
        return native(name, x)

    def native(name: str, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        k = m["size_multiple"]
        xp = np.pad(x, ((0, 0), (0, 0), (0, -h % k), (0, -w % k)), mode="reflect")
        y = session(m["experts"][name]).run(None, {"image": xp})[0][..., :h, :w]
        return np.clip(y, 0.0, 1.0).astype(np.float32)

    x = np.ascontiguousarray(rgb01.transpose(2, 0, 1)[None], dtype=np.float32)
    y, decision = run_chain(
        x, route=route, expert_of=lambda c: to_expert[classes.index(c)], apply=apply,
        max_steps=m["max_steps"], threshold=m["chain_threshold"], after=m.get("chain_after"),
    )
    return np.ascontiguousarray(np.asarray(y)[0].transpose(1, 2, 0)), list(decision.experts)


def _check_images(size: tuple[int, int] = (136, 200)) -> list[tuple[str, np.ndarray]]:
    """Generated photos-like images (smooth fields with edges), clean and degraded by every family."""
    from ramir.data.online import degrade_at_level

    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.3 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    base += (xx[..., None] > 0.5) * 0.2 + rng.uniform(-0.05, 0.05, (h, w, 3))
    clean = np.clip(base, 0, 1).astype(np.float32)
    out = [("clean", clean)]
    levels = {"noise": 25.0, "blur": 2.0, "jpeg": 20.0}
    for kind in ("noise", "blur", "jpeg", "motion", "rain", "haze", "low_light"):
        out.append((kind, degrade_at_level(clean, kind, levels.get(kind), 1)))
    return out


def _check_routed(
    network: nn.Module, manifest: Path, tolerance: float
) -> tuple[dict[str, float], int, int]:
    """The exported model against PyTorch on :func:`_check_images`: same experts, outputs within tolerance
    (each expert's error measured where it ran)."""
    from ramir.imagespace import denormalize, normalize
    from ramir.routing import run_chain

    net = network.eval()

    def route(x: torch.Tensor) -> tuple[dict[str, float], str]:
        with torch.inference_mode():
            return net.decide_one(normalize(x))

    def native(name: str, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return denormalize(net.expert_module(net.expert_names.index(name))(normalize(x))).clamp(0, 1)

    def apply(name: str, x: torch.Tensor) -> torch.Tensor:
        if net.restores_small(name, x):  # a large photo's blur, at the second look's scale
            return net.restore_small(x, lambda t: native(name, t)).clamp(0, 1)
        return native(name, x)

    sessions: dict = {}
    worst: dict[str, float] = {}
    agree = 0
    images = _check_images()
    for label, img in images:
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        y_t, d = run_chain(x, route=route, expert_of=net.expert_for, apply=apply, max_steps=net.max_steps,
                           threshold=net.chain_threshold, after=net.chain_after)
        y_o, experts = run_exported(manifest, img, sessions)
        if list(d.experts) != experts:
            raise RamirError(f"exported model chose {experts or 'none'} where PyTorch chose "
                             f"{list(d.experts) or 'none'} on the {label} check image; not trusted")
        agree += 1
        diff = float(np.abs(y_o - y_t[0].permute(1, 2, 0).numpy()).max())
        for e in experts or ["(unchanged)"]:
            worst[e] = max(worst.get(e, 0.0), diff)
        if diff > tolerance:
            raise RamirError(f"exported model differs from PyTorch by {diff:.2e} (> {tolerance:.0e}) on the "
                             f"{label} check image; not trusted")
    return worst, agree, len(images)
