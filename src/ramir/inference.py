"""Restoring images: tiled inference with seamless blending, and the :class:`Restorer` users touch first.

``ramir.load(...)`` returns a :class:`Restorer`; ``restorer.restore(image)`` takes a PIL image, a numpy
array or a torch tensor and returns the same kind. Underneath, :func:`restore_tensor` runs any network
that maps ImageNet-normalised RGB to ImageNet-normalised RGB (RAM's convention) on an image of any size:

- **Tiles.** The image is cut into tiles of ``tile`` pixels (a multiple of the network's window, so a
  tile's windows line up with the whole image's), overlapping by ``overlap`` pixels. Tile starts are
  multiples of the window; the last tile of a row or column ends exactly at the image border, so the
  network pads it exactly as it pads the whole image.
- **Blending.** Each tile's output is weighted by a separable window that is 0 on the first
  ``overlap // 4`` pixels next to an inner tile edge (where a tile's output is least like the whole
  image's), then rises as a raised cosine over the middle half of the overlap. Because the tile grid is a
  product grid, the per-pixel sum of weights is the outer product of two 1-D sums: the 1-D weights are
  normalised up front and tiles are accumulated straight into the output tensor — no weight buffer and
  no second image-sized buffer. For a network whose receptive field radius is at most ``overlap // 4``
  (convolutions; SwinIR restricted to one unshifted window layer per tile margin), tiled output equals
  whole-image output; for networks with global operations (PromptIR's channel attention and prompt
  pooling) tiles differ slightly and the blend hides the seams.
- **Memory.** Only a small batch of tiles is on the device at a time; the image and the output stay on
  the CPU in float32. ``tile="auto"`` runs the whole image when an architecture's memory-per-pixel
  estimate fits in the free memory, else picks the largest tile that fits. An out-of-memory error is
  retried with smaller tiles.
- **Precision.** fp32 by default; bf16/fp16 via autocast on request. A non-finite or all-black result
  in reduced precision is redone in fp32, with a warning.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ramir.archs import bytes_per_pixel, fold_for_inference, network_multiple
from ramir.archs.descriptor import FALLBACK_BYTES_PER_PIXEL
from ramir.devices import cpu_bf16_problem, free_memory, resolve_device
from ramir.ensemble import VIEWS as ENSEMBLE_VIEWS
from ramir.ensemble import self_ensemble
from ramir.errors import CheckpointError, ImageError, RamirError
from ramir.imagespace import denormalize, normalize
from ramir.routing import Decision, Step, parse_experts, run_chain, run_forced

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("torch", "onnxruntime")  # what a Restorer runs; load() also takes "auto"
DEFAULT_OVERLAP = 32
DEFAULT_WEIGHTS = "default.safetensors"
NO_DEFAULT_MODEL = (
    "no embedded default model is shipped in this build yet; pass --model PATH (a RAM checkpoint)"
)



class _ReducedPrecisionFailed(Exception):
    """Internal: a bf16/fp16 pass gave non-finite values; redo the image in fp32."""


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


# ``tile="auto"`` plans a restore to fit MAX_MEMORY (``--max-memory``), whatever the machine has: the
# image buffers (IMAGE_BYTES_PER_PIXEL: decoded float32 input, the float32 tensor in and out, the 8/16-bit
# output) and the loaded runtime (RUNTIME_BYTES) come first, the network's activations get the rest, but
# never less than MIN_ACTIVATION_BYTES (a 128-pixel tile of the largest shipped network fits in it).
MAX_MEMORY = 2 << 30
IMAGE_BYTES_PER_PIXEL = 42
RUNTIME_BYTES = 400 << 20
MIN_ACTIVATION_BYTES = 128 << 20
MIN_TILE = 16  # smaller tiles are refused: the blend needs room for the overlap on both sides


def activation_budget(height: int, width: int, images: int = 1, max_memory: int = MAX_MEMORY) -> int:
    """Bytes the network's activations may use when a restore of ``images`` such images is to stay
    within ``max_memory`` in all."""
    rest = max_memory - IMAGE_BYTES_PER_PIXEL * height * width * images - RUNTIME_BYTES
    return max(rest, MIN_ACTIVATION_BYTES)


TILE_BUDGET = activation_budget(0, 0)  # the activation budget before any image is counted


def auto_tile(
    height: int, width: int, *, bpp: int, device: torch.device, multiple: int = 1, images: int = 1,
    free: int | None = None, budget: int = TILE_BUDGET,
) -> int:
    """0 (whole image) when the estimate fits the budget, else the largest tile that fits (between 128
    and 2048 pixels, a multiple of ``multiple``). The budget is ``budget`` or half the free memory,
    whichever is smaller: a fixed default keeps peak memory the same on a 24 GB and a 256 GB machine,
    instead of growing with it."""
    free = free_memory(device) if free is None else free
    if free is None:
        free = 4 << 30  # unknown (non-Linux CPU): assume a modest machine
    budget = min(free // 2, budget)
    if bpp * height * width * images <= budget:
        return 0
    side = int(math.sqrt(budget / bpp))
    side = min(max(side, 128), 2048)
    return max(multiple, (side // multiple) * multiple)


# ------------------------------------------------------------------------------------------ tile layout
def tile_spans(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[start, end) spans along one axis: starts are multiples of ``multiple``, neighbours overlap by at
    least ``overlap``, the last span ends at ``length`` (it may be up to ``multiple - 1`` longer than
    ``tile``). One span when the tile covers the axis."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    stride = max(multiple, ((tile - overlap) // multiple) * multiple)
    starts = list(range(0, length - tile, stride))
    last = ((length - tile) // multiple) * multiple
    if starts and last <= starts[-1]:
        starts.pop()  # the previous tile is simply extended to the border
    starts.append(last)
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], length)]


def _ramp(n: int, margin: int, rise: int) -> torch.Tensor:
    """0 for ``margin`` samples, a raised cosine over ``rise`` samples, then 1 (length ``n``)."""
    w = torch.ones(n, dtype=torch.float64)
    margin, rise = min(margin, n), min(rise, max(n - margin, 0))
    w[:margin] = 0.0
    if rise > 0:
        t = (torch.arange(rise, dtype=torch.float64) + 0.5) / rise
        w[margin : margin + rise] = 0.5 - 0.5 * torch.cos(math.pi * t)
    return w


def axis_weights(spans: list[tuple[int, int]], length: int, overlap: int) -> list[torch.Tensor]:
    """Blending weights of each span along one axis, normalised so that they sum to 1 at every pixel.

    Inner tile edges get a zero margin of ``overlap // 4`` then a raised-cosine rise over
    ``overlap - 2 * (overlap // 4)``; image borders get full weight.
    """
    if len(spans) == 1:
        return [torch.ones(length, dtype=torch.float32)]
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    raw = []
    total = torch.zeros(length, dtype=torch.float64)
    for s, e in spans:
        w = torch.ones(e - s, dtype=torch.float64)
        if s > 0:
            w = w * _ramp(e - s, margin, rise)
        if e < length:
            w = w * _ramp(e - s, margin, rise).flip(0)
        raw.append(w)
        total[s:e] += w
    if bool((total <= 0).any()):  # cannot happen with overlap >= 2 * margin + 1, checked anyway
        raise RuntimeError("tile weights leave pixels uncovered; increase the overlap")
    return [(w / total[s:e]).float() for w, (s, e) in zip(raw, spans)]


# ----------------------------------------------------------------------------------------- running it
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _release_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        with contextlib.suppress(Exception):
            torch.mps.empty_cache()


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _forward_tiles(
    network: Callable[[torch.Tensor], torch.Tensor], x01: torch.Tensor, device: torch.device, precision: str
) -> torch.Tensor:
    """[0, 1] tiles (CPU) -> restored [0, 1] tiles (CPU float32): normalise, run, de-normalise, clamp."""
    x = normalize(x01.to(device=device, dtype=torch.float32, non_blocking=True))
    with _autocast(device, precision):
        y = network(x)
    y = denormalize(y.float())
    if not bool(torch.isfinite(y).all()):
        if precision != "fp32":
            raise _ReducedPrecisionFailed
        raise RamirError("the network produced NaN/inf values in fp32 (are the weights corrupt?)")
    return y.clamp_(0.0, 1.0).to("cpu", torch.float32)


def _restore_once(
    network: Callable[[torch.Tensor], torch.Tensor],
    x01: torch.Tensor,
    tile: int,
    overlap: int,
    multiple: int,
    device: torch.device,
    precision: str,
    tile_batch: int,
) -> torch.Tensor:
    n, _c, h, w = x01.shape
    ys, xs = tile_spans(h, tile, overlap, multiple), tile_spans(w, tile, overlap, multiple)
    if len(ys) == 1 and len(xs) == 1:
        return _forward_tiles(network, x01, device, precision)
    wy, wx = axis_weights(ys, h, overlap), axis_weights(xs, w, overlap)
    # channels-last storage viewed as NCHW: converting the result to HWC images later costs nothing
    out = torch.zeros((n, h, w, 3), dtype=torch.float32).permute(0, 3, 1, 2)
    for i in range(n):
        for (y0, y1), wyk in zip(ys, wy):
            for group in _batches(list(zip(xs, wx)), tile_batch):
                batch = torch.stack([x01[i, :, y0:y1, x0:x1] for (x0, x1), _ in group])
                restored = _forward_tiles(network, batch, device, precision)
                for k, ((x0, x1), wxk) in enumerate(group):
                    out[i, :, y0:y1, x0:x1].addcmul_(restored[k], wyk[:, None] * wxk[None, :])
    return out


def _batches(row: list, size: int) -> Iterator[list]:
    """Consecutive tiles of one width, at most ``size`` at a time (only a row's last tile can be wider)."""
    batch: list = []
    for item in row:
        (x0, x1), _ = item
        if batch and (len(batch) == size or batch[0][0][1] - batch[0][0][0] != x1 - x0):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def restore_tensor(
    network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x01: torch.Tensor,
    *,
    tile: int | str = "auto",
    overlap: int = DEFAULT_OVERLAP,
    multiple: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tile_batch: int | None = None,
    bpp: int | None = None,
    max_memory: int = MAX_MEMORY,
) -> torch.Tensor:
    """Restore (N, 3, H, W) RGB in [0, 1] (CPU) with a normalised -> normalised network; CPU float32 out.

    ``tile``: pixels per tile side (0 for the whole image, else at least :data:`MIN_TILE`), or "auto":
    the largest that keeps the restore within ``max_memory`` bytes (see :func:`activation_budget`;
    a planning estimate, not a hard limit). ``multiple``: the network's size
    multiple (detected when None). ``device``: where the network runs (None: where its parameters are;
    the network is moved there if needed). ``tile_batch``: tiles per forward pass (default 4 on an
    accelerator, 1 on the CPU). See the module docstring for the blending and the fallbacks.
    """
    if x01.dim() != 4 or x01.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) tensor, got shape {tuple(x01.shape)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    module = network if isinstance(network, nn.Module) else None
    dev = resolve_device(device, network=module)
    if module is not None and device is not None:
        module.to(dev)
    multiple = multiple or (network_multiple(module) if module is not None else 1)
    n, _c, h, w = x01.shape
    if tile == "auto":
        est = bpp or (bytes_per_pixel(module) if module is not None else FALLBACK_BYTES_PER_PIXEL)
        budget = activation_budget(h, w, n, max_memory)
        tile = auto_tile(h, w, bpp=est, device=dev, multiple=multiple, images=n, budget=budget)
    elif isinstance(tile, str):
        raise ValueError(f"tile must be a number of pixels, 0 or 'auto', got {tile!r}")
    elif 0 < tile < MIN_TILE:
        raise ValueError(f"tile must be 0 (whole image) or at least {MIN_TILE} pixels, got {tile}")
    tile = 0 if tile <= 0 else _round_to(int(tile), multiple)
    tile_batch = tile_batch or (1 if dev.type == "cpu" else 4)
    x01 = x01.detach().to("cpu", torch.float32)

    with torch.inference_mode():
        while True:
            ov = min(overlap, tile // 2) if tile else overlap
            retry: str | None = None
            try:
                out = _restore_once(network, x01, tile, ov, multiple, dev, precision, tile_batch)
            except _ReducedPrecisionFailed:
                retry = "nonfinite"
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                retry = "oom"
            if retry is None and precision != "fp32" and _all_black(out, x01):
                retry = "black"
            if retry is None:
                return out
            if retry in ("nonfinite", "black"):
                what = "NaN/inf values" if retry == "nonfinite" else "an all-black image"
                warnings.warn(f"{precision} inference gave {what}; redoing this image in fp32", stacklevel=2)
                precision = "fp32"
                continue
            _release_memory(dev)  # outside the except block: the traceback no longer pins tensors
            smaller = _smaller_tile(tile, h, w, multiple, tile_batch)
            if smaller is None:
                hint = "close other programs" if dev.type == "cpu" else "try --device cpu or --precision bf16"
                raise RamirError(f"out of memory on {dev} even with {tile or max(h, w)}-pixel tiles; {hint}")
            tile, tile_batch = smaller
            warnings.warn(f"out of memory on {dev}; retrying with {tile}-pixel tiles", stacklevel=2)


def _smaller_tile(tile: int, h: int, w: int, multiple: int, tile_batch: int) -> tuple[int, int] | None:
    if tile_batch > 1:
        return tile or _round_to(max(h, w), multiple), 1
    current = tile or max(h, w)
    smaller = ((current // 2) // multiple) * multiple
    floor = max(multiple, 32)
    if smaller < floor:
        return None
    return smaller, 1


def _all_black(out: torch.Tensor, x01: torch.Tensor) -> bool:
    """A reduced-precision failure mode: everything 0 although the input was not dark."""
    return bool(out.amax() < 1.0 / 255.0) and bool(x01.amax() > 8.0 / 255.0)


# ------------------------------------------------------------------------------------------- Restorer
class TwinMaskNetwork(nn.Module):
    """Restore with a pre-trained-only MIM model via complementary masks (paper Fig. 4), deterministic."""

    def __init__(self, network: nn.Module, ratio: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.network, self.ratio, self.seed = network, ratio, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ramir.masking import twin_mask_forward

        generator = torch.Generator().manual_seed(self.seed)
        return twin_mask_forward(self.network, x, self.ratio, generator)


@dataclass
class Restorer:
    """A network ready to restore images: ``restorer.restore(image)`` returns the same kind of image.

    ``network`` maps ImageNet-normalised RGB to ImageNet-normalised RGB; it runs on ``device`` in eval
    mode. ``tile``/``overlap``/``precision`` are passed to :func:`restore_tensor`.
    """

    network: nn.Module = field(repr=False)
    device: torch.device
    tile: int | str = "auto"
    overlap: int = DEFAULT_OVERLAP
    precision: str = "fp32"
    twin_mask: bool = False
    name: str = ""
    backend: str = "torch"
    max_memory: int = MAX_MEMORY
    # told, one line each, when a network is exported for onnxruntime (seconds, once per network)
    announce: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    # a routed network's chain (ramir.routing): at most max_steps experts per image; a step after the
    # first needs the router's probability of its class to reach chain_threshold (chosen on validation)
    # None: the routed checkpoint's own settings
    max_steps: int | None = None
    chain_threshold: float | None = None
    # expert -> the experts it may follow as a later step (None: the checkpoint's; {}: any order)
    chain_after: dict[str, list[str]] | None = None
    # geometric self-ensemble (ramir.ensemble): each expert (or the plain network) restores this many
    # flipped/transposed views and their mean is kept; 1 = one pass. Routing still looks once.
    ensemble: int = 1

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLE_VIEWS:
            raise RamirError(
                f"ensemble must be one of {', '.join(map(str, ENSEMBLE_VIEWS))} views, got {self.ensemble!r}"
            )
        if self.precision not in PRECISIONS:
            raise RamirError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise RamirError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        # before the bf16 fallback below: what was asked is refused on every CPU, not only where torch
        # happens to have a bfloat16 path
        if self.backend == "onnxruntime" and (
            self.device.type != "cpu" or self.precision != "fp32" or self.twin_mask
        ):
            raise RamirError("the onnxruntime backend runs on the CPU in fp32 without --twin-mask")
        why = cpu_bf16_problem() if self.precision == "bf16" and self.device.type == "cpu" else None
        if why:  # said once, here, not per image: the whole run is fp32
            note = f"--precision bf16: {why}; restoring in fp32"
            if self.announce is not None:
                self.announce(f"ramir: note: {note}")
            else:
                warnings.warn(note, stacklevel=3)
            self.precision = "fp32"
        self.network = self.network.to(self.device).eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # tiles repeat one size: cuDNN's autotuning pays off
        self.multiple = network_multiple(self.network)
        # a routed network (ramir.archs.routed): route each whole image once, then restore its tiles with
        # the chosen expert, so that tiles never disagree; each expert gets its own backend
        self._experts: list[nn.Module] | None = None
        self._expert_forwards: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.last_routes: list[str] = []  # the router's class of each image's input ("forced" if chosen)
        self.last_decisions: list[Decision] = []  # every step of each image of the last restore
        self.export_seconds = 0.0  # time spent exporting networks for onnxruntime (first uses only)
        experts = getattr(self.network, "experts", None)
        if hasattr(self.network, "route") and isinstance(experts, nn.ModuleList):
            self._experts = list(experts)
            self._bpp = max(bytes_per_pixel(e) for e in self._experts)
        else:
            self._bpp = bytes_per_pixel(self.network)
        if self.max_steps is None:
            self.max_steps = int(getattr(self.network, "max_steps", 1))
        if self.chain_threshold is None:
            self.chain_threshold = float(getattr(self.network, "chain_threshold", 0.0))
        if self.chain_after is None:
            self.chain_after = dict(getattr(self.network, "chain_after", None) or {})
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            self._backend_for(self.network) if self._experts is None else self.network
        )

    def _backend_for(
        self, network: nn.Module, label: str = "the network"
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.backend == "onnxruntime":
            from ramir.ort_backend import OnnxRuntimeNetwork

            runner = OnnxRuntimeNetwork(network, announce=self.announce, label=label)
            self.export_seconds += runner.export_seconds
            return runner
        if self.device.type == "cpu" and self.precision == "fp32":
            # the inference form: the same function, 1.2x faster with PyTorch on the CPU
            # (docs/performance.md); not under reduced precision, where its convolution-computed variances
            # would round coarsely
            network = fold_for_inference(network)
        return TwinMaskNetwork(network) if self.twin_mask else network

    def _expert_forward(self, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        if k not in self._expert_forwards:
            assert self._experts is not None
            names = getattr(self.network, "expert_names", None)
            label = f"expert {names[k]!r}" if names else f"expert {k}"
            self._expert_forwards[k] = self._backend_for(self.network.expert_module(k), label)
        return self._expert_forwards[k]

    @property
    def min_size(self) -> int:
        """The smallest width/height accepted: 1 (smaller images are padded to the network's window)."""
        return 1

    @property
    def expert_names(self) -> list[str]:
        """The experts of a routed model ([] for a plain network)."""
        return list(getattr(self.network, "expert_names", [])) if self._experts is not None else []

    def _route_one(self, x01: torch.Tensor) -> tuple[dict[str, float], str]:
        with torch.inference_mode():
            return self.network.decide_one(normalize(x01.to("cpu", torch.float32)).to(self.device))

    def _expert_of(self, label: str) -> str | None:
        return self.network.expert_for(label)

    def _apply_expert(self, name: str, x01: torch.Tensor) -> torch.Tensor:
        k = self.network.expert_names.index(name)
        if self.network.restores_small(name, x01):  # a large photo's blur: at the training photos' scale
            return self.network.restore_small(x01, lambda t: self._apply_native(k, t)).clamp(0.0, 1.0)
        return self._apply_native(k, x01)

    def _apply_native(self, k: int, x01: torch.Tensor) -> torch.Tensor:
        views_for = getattr(self.network, "views_for", None)
        names = getattr(self.network, "expert_names", None)
        views = views_for(names[k], self.ensemble) if views_for and names else self.ensemble
        return self._run(self._expert_forward(k), x01, views).clamp(0.0, 1.0)

    def _run(
        self, forward: Callable[[torch.Tensor], torch.Tensor], x01: torch.Tensor,
        views: int | list[tuple[bool, bool, bool]] | None = None,
    ) -> torch.Tensor:
        """``forward`` over ``x01`` in tiles, once or averaged over ``views`` (:attr:`ensemble`) views."""

        def once(x: torch.Tensor) -> torch.Tensor:
            return restore_tensor(
                forward, x, tile=self.tile, overlap=self.overlap, multiple=self.multiple,
                device=self.device, precision=self.precision, bpp=self._bpp, max_memory=self.max_memory,
            )

        return self_ensemble(once, x01, self.ensemble if views is None else views)

    def route(self, image: Any) -> Decision:
        """The router's decision for ``image`` (any kind :meth:`restore` takes), without restoring: its
        class probabilities and the expert it would apply first (none if the image looks clean). Later
        steps of a chain depend on the restored image: :attr:`last_decisions` after :meth:`restore`."""
        if self._experts is None:
            raise RamirError("this model has no router: it restores every image the same way")
        x = self._as_tensor(image)
        probs, label = self._route_one(x)
        expert = self._expert_of(label)
        steps = () if expert is None else (Step(expert, label, probs[label]),)
        return Decision(steps, probs, False, "clean" if expert is None else "")

    def _as_tensor(self, image: Any) -> torch.Tensor:
        """(1, 3, H, W) float32 in [0, 1] of any image :meth:`restore` takes (colour part only, the first
        of a batch), read and checked as :meth:`restore` reads it."""
        from PIL import Image

        if isinstance(image, Image.Image):
            from ramir.imageio import from_pil

            rgb = from_pil(image).rgb
        elif isinstance(image, np.ndarray):
            rgb = _numpy_rgb01(image)[0]
        elif isinstance(image, torch.Tensor):
            return _torch_rgb01(image)[0][:1]
        else:
            kind = type(image).__name__
            raise TypeError(f"route() takes a PIL image, a numpy array or a torch tensor, not {kind}")
        return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]

    def restore_tensor(self, x01: torch.Tensor, expert: str | list[str] | None = None) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> restored, CPU float32.

        An image smaller than the network's window (its size multiple) is padded to it by edge
        replication, restored and cropped back: every image comes back restored. ``expert`` (a routed
        model only): names to apply in order instead of the router's chain (``"jpeg,noise"``, ``"none"``).
        """
        h, w = x01.shape[-2:]
        if min(h, w) < 1:
            raise ImageError(f"image is {w}x{h}: empty")
        if h < self.multiple or w < self.multiple:
            padded = torch.nn.functional.pad(
                x01.float(), (0, max(0, self.multiple - w), 0, max(0, self.multiple - h)), mode="replicate"
            )
            return self.restore_tensor(padded, expert)[..., :h, :w]
        if self._experts is None:
            if expert is not None:
                raise RamirError("--expert needs a routed model (like the default one); this has no experts")
            return self._run(self._forward, x01)
        forced = parse_experts(expert, self.network.expert_names) if expert is not None else None
        outs, self.last_routes, self.last_decisions = [], [], []
        for i in range(x01.shape[0]):
            xi = x01[i : i + 1].detach().to("cpu", torch.float32)
            if forced is not None:
                y, decision = run_forced(xi, forced, self._apply_expert)
            else:
                y, decision = run_chain(
                    xi, route=self._route_one, expert_of=self._expert_of, apply=self._apply_expert,
                    max_steps=self.max_steps, threshold=self.chain_threshold, after=self.chain_after,
                )
            self.last_decisions.append(decision)
            first = decision.steps[0].label if decision.steps and not forced else None
            self.last_routes.append("forced" if forced is not None else first or "clean")
            outs.append(y if decision.steps else xi.clone())
        return torch.cat(outs, dim=0)

    def restore_rgb(self, rgb: np.ndarray, expert: str | list[str] | None = None) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1] -> restored (H, W, 3) float32 (no copy of the result)."""
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        y = self.restore_tensor(x, expert)[0].permute(1, 2, 0)
        return y.numpy() if y.is_contiguous() else np.ascontiguousarray(y.numpy())

    def restore(self, image: Any, expert: str | list[str] | None = None) -> Any:
        """Restore a PIL image, a numpy array (HW/HWC; uint8, uint16 or float in [0, 1]) or a torch tensor
        (CHW/NCHW in [0, 1], or uint8) and return the same kind, shape, dtype and mode.

        Grey images are restored as RGB and converted back; alpha is kept untouched. ``expert`` (routed
        models): force the restoration(s), e.g. ``"noise"``, ``"jpeg,noise"`` or ``"none"``, instead of
        the router's choice; what was done is in :attr:`last_decisions`.
        """
        from PIL import Image

        if isinstance(image, Image.Image):
            return self._restore_pil(image, expert)
        if isinstance(image, np.ndarray):
            return self._restore_numpy(image, expert)
        if isinstance(image, torch.Tensor):
            return self._restore_torch(image, expert)
        kind = type(image).__name__
        raise TypeError(f"restore() takes a PIL image, a numpy array or a torch tensor, not {kind}")

    def _restore_pil(self, image: Any, expert: str | list[str] | None = None) -> Any:
        from ramir.imageio import from_pil, to_pil

        loaded = from_pil(image)
        restored = to_pil(self.restore_rgb(loaded.rgb, expert), loaded, keep_palette=True)
        if loaded.icc_profile:
            restored.info["icc_profile"] = loaded.icc_profile
        return restored

    def _restore_numpy(self, image: np.ndarray, expert: str | list[str] | None = None) -> np.ndarray:
        x, alpha, grey, scale = _numpy_rgb01(image)
        y = self.restore_rgb(x, expert)
        return _join_channels(y, alpha, grey, image, scale)

    def _restore_torch(self, image: torch.Tensor, expert: str | list[str] | None = None) -> torch.Tensor:
        x, batch, scale = _torch_rgb01(image)
        c = batch.shape[1]
        y = self.restore_tensor(x, expert)
        if c < 3:
            luma = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
            y = (y * luma).sum(1, keepdim=True)
        if scale:
            y = (y * scale).round_().clamp_(0, 255)
        y = y.to(device=image.device, dtype=image.dtype)
        if c in (2, 4):
            y = torch.cat([y, batch[:, -1:]], dim=1)
        return y if image.dim() == 4 else y[0]


_LUMA = (0.299, 0.587, 0.114)


def _numpy_rgb01(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool, float | None]:
    """A numpy image's colour part as float32 RGB in [0, 1], with its alpha, grey flag and integer scale."""
    rgb, alpha, grey = _split_channels(image, image.ndim == 2)
    scale = _scale_of(image.dtype)
    x = rgb.astype(np.float32) / scale if scale else np.clip(rgb.astype(np.float32), 0.0, 1.0)
    return x, alpha, grey, scale


def _torch_rgb01(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """A CHW/NCHW tensor checked and read as (N, 3, H, W) CPU float32 in [0, 1]; also the NCHW batch it
    came from and 255 for uint8 (None for float)."""
    if image.dim() not in (3, 4):
        raise ImageError(f"expected a CHW or NCHW tensor, got shape {tuple(image.shape)}")
    batch = image if image.dim() == 4 else image[None]
    c = batch.shape[1]
    if c not in (1, 2, 3, 4):
        raise ImageError(f"expected 1-4 channels, got {c} (shape {tuple(image.shape)})")
    scale = 255.0 if batch.dtype == torch.uint8 else None
    if scale is None and not batch.is_floating_point():
        raise ImageError(f"unsupported tensor dtype {batch.dtype} (float in [0, 1] or uint8)")
    colour = batch[:, :3] if c >= 3 else batch[:, :1].expand(-1, 3, -1, -1)
    x = colour.detach().to("cpu", torch.float32)
    return (x / scale if scale else x.clamp(0.0, 1.0)), batch, scale


def _scale_of(dtype: np.dtype) -> float | None:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return None
    raise ImageError(f"unsupported array dtype {dtype} (uint8, uint16 or float in [0, 1])")


def _split_channels(image: np.ndarray, grey2d: bool) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """-> (H, W, 3) colour, alpha (untouched) or None, whether the input was grey."""
    if grey2d:
        return np.repeat(image[..., None], 3, axis=2), None, True
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an HW or HWC array with 1-4 channels, got shape {image.shape}")
    c = image.shape[2]
    alpha = image[..., -1].copy() if c in (2, 4) else None
    colour = image[..., :3] if c >= 3 else np.repeat(image[..., :1], 3, axis=2)
    return colour, alpha, c < 3


def _join_channels(
    y: np.ndarray, alpha: np.ndarray | None, grey: bool, like: np.ndarray, scale: float | None
) -> np.ndarray:
    from ramir.imageio import rgb_to_grey

    out = rgb_to_grey(y)[..., None] if grey else y
    if scale:
        out = np.rint(np.clip(out * scale, 0, scale))
    out = out.astype(like.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha[..., None].astype(like.dtype)], axis=2)
    return out[..., 0] if like.ndim == 2 else out


# ------------------------------------------------------------------------------------------------ load
def default_weights() -> Path | None:
    """The embedded default model (``ramir/weights/default.safetensors``), or None in builds without one."""
    ref = importlib.resources.files("ramir") / "weights" / DEFAULT_WEIGHTS
    if not ref.is_file():
        return None
    return Path(str(ref))


def _load_checkpoint_network(path: Path, device: torch.device) -> nn.Module:
    from ramir.checkpoints import load_network

    if "device" in inspect.signature(load_network).parameters:
        network = load_network(path, prefer_ema=True, device=device)
    else:
        network = load_network(path, prefer_ema=True).to(device)
    from ramir.archs import architecture_of

    arch = architecture_of(network)
    if arch is not None and arch.prepare is not None:
        arch.prepare(network)  # e.g. RAM++ RFR loads DINOv2 now, so a missing backbone fails once
    return network


def load(
    name_or_path: str | os.PathLike | nn.Module | None = None,
    device: str | torch.device = "auto",
    tile: int | str = "auto",
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "fp32",
    twin_mask: bool = False,
    allow_random: bool = False,
    backend: str = "auto",
    max_memory: int = MAX_MEMORY,
    announce: Callable[[str], None] | None = None,
    ensemble: int = 1,
) -> Restorer:
    """A ready-to-use :class:`Restorer`.

    ``name_or_path``: a checkpoint file (ramir ``.safetensors`` or the reference's ``.pth``; EMA weights
    preferred), None for the embedded default model, an ``nn.Module`` (normalised -> normalised), or a
    registered architecture name — refused unless ``allow_random`` since random weights restore nothing.
    ``device``: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps".
    ``twin_mask``: restore with complementary masks (for models that were only MIM pre-trained).
    ``backend``: "torch", "onnxruntime" (CPU, fp32: the network is exported to ONNX once and cached),
    or "auto" (default): onnxruntime where it was measured faster (the embedded model on the CPU in fp32,
    when onnxruntime is installed), else PyTorch; if onnxruntime then fails to set up, PyTorch, with a
    note to ``announce``.
    ``max_memory``: bytes a restore with ``tile="auto"`` plans to stay within (default 2 GiB).
    ``announce``: told, one line each, what the first use of onnxruntime costs (the export, once).
    ``ensemble``: 1, 2, 4 or 8 views of geometric self-ensemble (:mod:`ramir.ensemble`): that many times
    slower, a little better (docs/default-model.md, "Eighteenth cycle").
    """
    from ramir.archs import ARCHITECTURES, MODEL_CONFIGS, create_model

    dev = resolve_device(device)
    if isinstance(name_or_path, nn.Module):
        network, name = name_or_path, type(name_or_path).__name__
    elif name_or_path is None:
        path = default_weights()
        if path is None:
            raise RamirError(NO_DEFAULT_MODEL)
        network, name = _load_checkpoint_network(path, dev), "default"
    else:
        text = os.fspath(name_or_path)
        path = Path(text).expanduser()
        if path.is_file():
            network, name = _load_checkpoint_network(path, dev), path.name
        elif text in MODEL_CONFIGS or text in ARCHITECTURES:
            if not allow_random:
                raise RamirError(
                    f"{text!r} names an architecture, not trained weights: randomly initialised it would "
                    "only produce noise; pass a checkpoint file (--model PATH)"
                )
            network, name = create_model(text), f"{text} (random weights)"
        elif path.exists():
            raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
        else:
            raise CheckpointError(
                f"no such checkpoint file or model name: {text!r} (registered architectures: "
                f"{', '.join(sorted(MODEL_CONFIGS))})"
            )
    settings = dict(tile=tile, overlap=overlap, precision=precision, twin_mask=twin_mask, name=name,
                    max_memory=max_memory, announce=announce, ensemble=ensemble)
    if backend != "auto":
        return Restorer(network, dev, backend=backend, **settings)
    chosen = auto_backend(network, dev, precision=precision, twin_mask=twin_mask,
                          embedded=name_or_path is None)
    if chosen == "onnxruntime":
        try:
            return Restorer(network, dev, backend=chosen, **settings)
        except RamirError as exc:  # never worse than PyTorch: say why and go on without it
            if announce is not None:
                announce(f"ramir: note: onnxruntime backend unavailable ({exc}); using PyTorch")
    return Restorer(network, dev, backend="torch", **settings)


def auto_backend(
    network: nn.Module, device: torch.device, *, precision: str = "fp32", twin_mask: bool = False,
    embedded: bool = False,
) -> str:
    """``backend="auto"``: "onnxruntime" where it was measured faster than PyTorch (the embedded
    model's convolutional experts on the CPU in fp32: docs/performance.md) and can run (onnx and
    onnxruntime installed, every network involved exportable), else "torch"."""
    import importlib.util

    from ramir.archs import architecture_of

    if not embedded or device.type != "cpu" or precision != "fp32" or twin_mask:
        return "torch"
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "torch"
    experts = getattr(network, "experts", None)
    parts = list(experts) if isinstance(experts, nn.ModuleList) else [network]
    if not all((a := architecture_of(p)) is None or a.exportable for p in parts):
        return "torch"
    return "onnxruntime"
