"""Mask Attribute Conductance (MAC): which layers matter for restoring masked pixels (paper §3.3).

RAM ranks the layers of a mask-pre-trained network by how much each one conducts the change of the
output while the input goes from a masked image to the whole image, then fine-tunes only the top ones.

The equations (Qin et al., ECCV 2024, Eq. 5-9), in plain text:

    Eq. 5  conductance of a hidden unit y along a path gamma(alpha) from x' to x:
               Cond(y) = integral_0^1 dF/dy(gamma(alpha)) * dy(gamma(alpha))/dalpha dalpha
    Eq. 6  the mask attribute path: pixel i switches from x'_i to x_i at its own time alpha_i,
               gamma_i(alpha) = x'_i + 1[alpha >= alpha_i] * (x_i - x'_i),
           with alpha_i a shuffled arrangement of H*W equidistant points in [0, 1]
    Eq. 7  smoothed so the path is differentiable (sharpness delta):
               gamma_i(alpha) = x'_i + sigmoid(delta * (alpha - alpha_i)) * (x_i - x'_i)
    Eq. 8  only the last fraction r of the path is walked: alpha from 1 - r (mask ratio r) to 1
    Eq. 9  discretised with T steps, summed over the units of a layer l:
               MAC(l) = sum_t dF/dy_l(x_t) * (y_l(x_t) - y_l(x_{t-1}))

What is executed is what the reference implementation does (RAM_SPEC §3, fixtures README §3.3):

    a_t    = 1 - r + r * t / T                         for t = 0 .. T-1   (alpha = 1 is never reached)
    m_t[perm[j]] = sigmoid(k * (a_t - j / (H*W)))      for j < ceil(a_t * H * W), else 0
    x_t    = x' + m_t * (x - x'),   x' = 0 (the mean colour in ImageNet-normalised space)
    F(y)   = sum_{b,c,i<H-1,j<W-1} sqrt((y[i,j] - y[i+1,j])^2 + (y[i,j] - y[i,j+1])^2)
    cond_l = sum_{t>=1} dF/do_l(t) * (o_l(t) - o_l(t-1))   elementwise; the gradient is taken at the
                                                             *current* (right) end of each step
    score_l = mean(|cond_l|) per image, summed over images; layers are ranked by descending score.

perm, the order in which pixels are revealed, is a random permutation in RAM. RAM++ (RAMPP_SPEC §d,
``order="adasam"``) takes ``argsort(p_full)`` of its trained AdaSAM generator instead: the pixels it
would least like to mask first, the hardest ones last (:func:`adasam_order`). Nothing else changes.

F is not a loss against a ground truth: it is the summed gradient magnitude of the restored image, so
MAC measures how much each layer contributes to the structure that appears as pixels are revealed.

Implementation: layers are observed with forward hooks (the network is never edited) and the gradients
of F are taken with ``torch.autograd.grad`` with respect to the hooked outputs only, so no parameter
gradient is computed or touched. The steps of the path are independent forward passes, so
``batch_steps=B`` evaluates B of them as one batch: this assumes the network treats batch items
independently, which holds in eval mode (it would not for BatchNorm in train mode; the model is put in
eval mode for the analysis and restored afterwards). Memory is about 4.5 S + 2.5 S * batch_steps, with S
the bytes of all layer outputs for one image (1 GB for RAM-SwinIR on 64x64, 17 MB for ram-swinir-small):
see :func:`suggest_batch_steps`. Batching pays off on GPUs (6.95x on an H200); on a CPU one step at a
time is as fast or faster (0.93-1.05x for 8 per pass, docs/performance.md), so that is the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ramir.archs.common import observed_execution
from ramir.layers import attributable_layers, unwrap

__all__ = [
    "ORDERS",
    "LinearPathConductance",
    "MaskAttributeConductance",
    "adasam_order",
    "completeness_delta",
    "conductance_sums",
    "gradient_magnitude",
    "gradient_magnitude_objective",
    "integrated_gradients_scores",
    "layer_output_bytes",
    "mac_scores",
    "path_alphas",
    "random_scores",
    "soft_mask",
    "suggest_batch_steps",
]

ORDERS = ("random", "adasam")  # how the mask path orders the pixels it reveals

# --------------------------------------------------------------------------------------------------
# The path (Eq. 6-8) and the attributed scalar F: small pure functions
# --------------------------------------------------------------------------------------------------


def path_alphas(steps: int, ratio: float) -> list[float]:
    """Positions ``a_t = 1 - r + r*t/T`` (t = 0..T-1) on the mask path: mask ratio r up to 1 - r/T."""
    if steps < 2:
        raise ValueError(f"MAC needs at least 2 steps (one difference), got {steps}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"MAC path ratio must be in (0, 1], got {ratio}")
    # written exactly as the reference evaluates it (Python floats, left to right)
    return [1 - ratio + ratio * t / steps for t in range(steps)]


def soft_mask(
    alpha: float, perm: torch.Tensor, h: int, w: int, sharpness: float, *, truncate: bool = True
) -> torch.Tensor:
    """The (h, w) float32 soft mask at path position ``alpha`` (1 = pixel shown, 0 = pixel hidden).

    Pixel ``perm[i]`` (row-major index) for ``i < ceil(h*w*alpha)`` gets ``sigmoid(k*(alpha - i/(h*w)))``,
    computed in float64 and cast to float32; all other pixels are exactly 0 (Eq. 7 with the reference's
    cut-off). With k = 1e4 the mask is binary except for the last few revealed pixels.

    The cut-off makes the path discontinuous: a pixel enters at sigmoid(0+) >= 0.5, whatever k. With
    ``truncate=False`` every pixel gets its sigmoid (Eq. 7 as written), a smooth path on which
    conductance is complete (used by the tests); the reference and MAC use ``truncate=True``.
    """
    n = h * w
    if perm.numel() != n:
        raise ValueError(f"permutation has {perm.numel()} entries, expected {n} (= {h}x{w})")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cnt = min(math.ceil(n * alpha), n) if truncate else n
    i = torch.arange(cnt, dtype=torch.float64)
    values = 1.0 / (1.0 + torch.exp(-sharpness * (alpha - i / n)))
    mask = torch.zeros(n, dtype=torch.float64)
    mask[perm[:cnt].to(torch.long).cpu()] = values
    return mask.view(h, w).to(torch.float32)


def gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """Per-pixel forward-difference gradient magnitude of (B, C, H, W) images, shape (B, C, H-1, W-1).

    Uses ``torch.pow(., 0.5)`` like the reference (``sqrt`` differs by ~1e-7 relative in MAC scores).
    Where the output is locally flat (both differences exactly 0) the reference's gradient is
    ``inf * 0 = NaN``, which poisons every score of the image; here it is 0 (a subgradient of the norm).
    Everywhere else values and gradients are the reference's, bit for bit.
    """
    if y.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) output, got shape {tuple(y.shape)}")
    centre = y[:, :, :-1, :-1]
    down = centre - y[:, :, 1:, :-1]
    right = centre - y[:, :, :-1, 1:]
    squared = torch.pow(down, 2) + torch.pow(right, 2)
    flat = squared == 0
    return torch.where(flat, 0.0, torch.pow(torch.where(flat, 1.0, squared), 0.5))


def gradient_magnitude_objective(y: torch.Tensor) -> torch.Tensor:
    """F: the summed gradient magnitude of the output (the scalar MAC attributes), a 0-d tensor."""
    return gradient_magnitude(y).sum()


# --------------------------------------------------------------------------------------------------
# Layer conductance along any discretised path (Eq. 9), shared by MAC and the IG baseline
# --------------------------------------------------------------------------------------------------

PathInputs = Callable[[range], torch.Tensor]  # point indices -> (len, C, H, W) network inputs


@dataclass
class PathConductance:
    """Signed elementwise conductance per layer (None if the layer never ran) and F at both ends."""

    cond: dict[str, torch.Tensor | None]
    f_start: float
    f_end: float


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module produced; for tuple/list outputs the first tensor element."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        return p.dtype, p.device
    return torch.float32, torch.device("cpu")


class _AnalysisMode:
    """Eval mode, frozen parameters and observed execution (every layer's whole output, as the
    reference's hooks see it: :func:`ramir.archs.common.observed_execution`) for the duration of an
    analysis; restores all three afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.observed = observed_execution()

    def __enter__(self) -> None:
        self.observed.__enter__()
        self.training = [(m, m.training) for m in self.model.modules()]
        self.requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.requires_grad:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.training:
            m.training = mode
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        self.observed.__exit__(*exc)


def _split_steps(t: torch.Tensor, n: int, layer: str) -> torch.Tensor:
    """View a batched layer output as (n, *per-step shape).

    Works for batch-first outputs and for window layouts (nW*B, ...) because windows are ordered
    batch-major (SwinIR's window partition keeps the batch as the slowest index).
    """
    if t.shape[0] % n:
        raise ValueError(
            f"layer {layer!r}: output dim 0 ({t.shape[0]}) is not a multiple of the {n} batched steps; "
            "use batch_steps=1 for this network"
        )
    return t.reshape(n, t.shape[0] // n, *t.shape[1:])


class _LayerAccumulator:
    """Running conductance of one layer: ``cond += g(t) * (o(t) - o(t-1))``, holding only o(t-1)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None

    def add(self, outputs: torch.Tensor, grads: torch.Tensor | None, points: range) -> None:
        """Consume one batch of path points: outputs/grads are the batched tensors of this layer."""
        n = len(points)
        outs = _split_steps(outputs, n, self.name)
        steps_grad = None if grads is None else _split_steps(grads, n, self.name)
        prev = self.previous
        for k, t in enumerate(points):
            if t >= 1 and steps_grad is not None:
                if prev is None or prev.shape != outs[k].shape:
                    raise ValueError(f"layer {self.name!r}: output shape changed along the path")
                # Eq. 9: the gradient at the current point times the change since the previous one
                contribution = steps_grad[k] * (outs[k] - prev)
                if self.cond is None:
                    self.cond = contribution
                else:
                    self.cond += contribution
            prev = outs[k]
        # keep the last point only (a copy, so the rest of the batch's outputs can be freed)
        self.previous = prev if n == 1 else prev.clone()


def _path_conductance(
    model: nn.Module,
    layers: Sequence[str],
    inputs: PathInputs,
    n_points: int,
    batch_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PathConductance:
    """Accumulate ``cond_l += dF/do_l(t) * (o_l(t) - o_l(t-1))`` over path points t = 0..n_points-1.

    ``inputs(range)`` returns the network inputs of those points as one batch. Points are processed
    ``batch_steps`` at a time. Each layer's gradient is consumed by a tensor hook as soon as backward
    produces it, so neither all gradients nor all outputs of a step are held at once; between batches
    only the last point's outputs are kept.
    """
    if n_points < 2:
        raise ValueError(f"a path needs at least 2 points, got {n_points}")
    step_batch = 1 if batch_steps is None else int(batch_steps)
    if step_batch < 1:
        raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")

    accumulators = {name: _LayerAccumulator(name) for name in layers}
    captured: dict[str, torch.Tensor] = {}
    versions: dict[str, int] = {}
    calls: dict[str, int] = {}
    current = {"points": range(0), "backward": False}

    def on_grad(name: str, grad: torch.Tensor) -> None:
        out = captured.pop(name, None)
        if out is not None:  # first (and only) gradient of this output in this backward pass
            accumulators[name].add(out.detach(), grad, current["points"])

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            tensor = _first_tensor(output)
            if tensor is None:
                return
            captured[name] = tensor
            versions[name] = tensor._version
            if current["backward"] and tensor.requires_grad:
                tensor.register_hook(lambda grad: on_grad(name, grad))

        return hook

    handles = [model.get_submodule(name).register_forward_hook(make_hook(name)) for name in layers]
    f_start = f_end = float("nan")
    try:
        with torch.enable_grad():
            for start in range(0, n_points, step_batch):
                points = range(start, min(start + step_batch, n_points))
                current.update(points=points, backward=points[-1] >= 1)  # point 0 alone: no gradient
                captured.clear()
                versions.clear()
                calls.clear()
                x = inputs(points).detach().requires_grad_(True)
                f_per_step = gradient_magnitude(model(x)).flatten(1).sum(1)
                if points[0] == 0:
                    f_start = float(f_per_step[0].detach())
                if points[-1] == n_points - 1:
                    f_end = float(f_per_step[-1].detach())
                _check_outputs(captured, versions, calls)
                if current["backward"] and f_per_step.requires_grad:
                    # backward through every layer to the input; the tensor hooks accumulate on the way
                    torch.autograd.grad(f_per_step.sum(), x, allow_unused=True)
                # layers F does not depend on (no gradient arrived): no conductance, but keep o(t)
                for name, out in list(captured.items()):
                    accumulators[name].add(out.detach(), None, points)
                captured.clear()
                if progress is not None:
                    progress(len(points))
    finally:
        for handle in handles:
            handle.remove()
    return PathConductance({name: acc.cond for name, acc in accumulators.items()}, f_start, f_end)


def _check_outputs(captured: Mapping[str, torch.Tensor], versions: Mapping[str, int],
                   calls: Mapping[str, int]) -> None:
    """Each layer must produce one output per forward pass, left unmodified by the network."""
    for name, count in calls.items():
        if count > 1:
            raise ValueError(
                f"layer {name!r} ran {count} times in one forward pass; "
                "conductance needs one output per layer"
            )
    for name, out in captured.items():
        if out._version != versions[name]:
            raise ValueError(
                f"layer {name!r}: the network modified this layer's output in place after it was produced; "
                "its conductance cannot be measured (use an out-of-place operation there)"
            )


def _prepare_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    dtype, device = _model_dtype_device(model)
    return images.detach().to(device=device, dtype=dtype)


def _baseline_of(x: torch.Tensor, baseline: torch.Tensor | float, i: int = 0) -> torch.Tensor:
    """The path's start x' for image ``i``: a constant, one tensor broadcastable to the image, or
    one per image (N, C, H, W)."""
    if not isinstance(baseline, torch.Tensor):
        return torch.full_like(x, float(baseline))
    b = baseline.detach().to(device=x.device, dtype=x.dtype)
    if b.dim() == 4 and b.shape[0] > 1:
        b = b[i : i + 1]
    try:
        return torch.broadcast_to(b, x.shape).clone()
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not fit images of shape "
                         f"{tuple(x.shape)}") from None


def _mask_path(
    x: torch.Tensor, perm: torch.Tensor, alphas: Sequence[float], sharpness: float, truncate: bool = True,
    base: torch.Tensor | None = None,
) -> PathInputs:
    """Points of the mask attribute path from ``base`` (default: the zero image) to ``x`` (1, C, H, W)."""
    h, w = x.shape[-2:]
    base = torch.zeros_like(x) if base is None else base

    def inputs(points: range) -> torch.Tensor:
        masks = torch.stack([soft_mask(alphas[t], perm, h, w, sharpness, truncate=truncate) for t in points])
        masks = masks.to(device=x.device, dtype=x.dtype).unsqueeze(1)  # same mask on every channel
        return base + masks * (x - base)

    return inputs


def _linear_path(x: torch.Tensor, steps: int, base: torch.Tensor | None = None) -> PathInputs:
    """Points ``x' + (t/T) * (x - x')`` for t = 0..T of the straight line from ``base`` x' (default:
    the zero image, where the points are exactly ``(t/T) * x``) to ``x``."""

    def inputs(points: range) -> torch.Tensor:
        scale = torch.tensor([t / steps for t in points], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        return scale * x if base is None else base + scale * (x - base)

    return inputs


def adasam_order(mask_generator: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """RAM++'s pixel order for the mask path (RAMPP_SPEC §d): the pixels of one (1, C, S, S) image by
    ascending mask probability (row-major indices, a (S*S,) long tensor on the CPU).

    :func:`soft_mask` reveals ``perm[0]`` first, so the pixels the generator would least like to mask
    come first and those it finds hardest to restore last, where the path ends. torch's default
    (unstable) argsort, as the reference: all P x P pixels of a patch tie, and their order is the sort's
    (the same as the reference's on the CPU; a GPU sort orders ties differently). The generator runs in
    eval mode (no dropout), and no mask is drawn, so no RNG is consumed.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"adasam_order takes one (1, C, H, W) image, got shape {tuple(image.shape)}")
    dtype, device = _model_dtype_device(mask_generator)
    with _AnalysisMode(mask_generator), torch.no_grad():
        x = image.detach().to(device=device, dtype=dtype)
        probs = mask_generator.pixel_probabilities(mask_generator.patch_probabilities(x))
    return torch.argsort(probs.flatten()).cpu()


def _draw_permutations(
    images: torch.Tensor,
    permutations: Sequence[torch.Tensor] | None,
    generator: torch.Generator | None,
    order: str = "random",
    mask_generator: nn.Module | None = None,
) -> list[torch.Tensor]:
    n, _, h, w = images.shape
    if order not in ORDERS:
        raise ValueError(f"unknown pixel order {order!r}; use one of {', '.join(ORDERS)}")
    if order == "adasam":
        if mask_generator is None:
            raise ValueError("order='adasam' needs the trained mask generator: mask_generator=...")
        if permutations is not None:
            raise ValueError("give either permutations or order='adasam', not both")
        return [adasam_order(mask_generator, images[i : i + 1]) for i in range(n)]
    if mask_generator is not None:
        raise ValueError("mask_generator orders the pixels only with order='adasam'")
    if permutations is None:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return [torch.randperm(h * w, generator=generator) for _ in range(n)]
    perms = [torch.as_tensor(p, dtype=torch.long).flatten().cpu() for p in permutations]
    if len(perms) != n:
        raise ValueError(f"{len(perms)} permutations given for {n} images")
    for p in perms:
        if p.numel() != h * w or not torch.equal(torch.sort(p).values, torch.arange(h * w)):
            raise ValueError(f"each permutation must be a permutation of range({h * w})")
    return perms


class _ConductanceBase:
    """Model + layers fixed at construction, data and integration settings per call (captum style)."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.model = unwrap(model)
        self.layers = list(attributable_layers(self.model) if layers is None else layers)
        if not self.layers:
            raise ValueError("the model has no attributable layers (no module owns parameters)")
        known = dict(self.model.named_modules())
        unknown = [name for name in self.layers if name not in known]
        if unknown:
            raise ValueError(f"unknown layer(s): {', '.join(unknown[:5])}")
        self.progress = progress

    def _scores(self, paths: Iterable[tuple[PathInputs, int]], batch_steps: int | None) -> dict[str, float]:
        scores = dict.fromkeys(self.layers, 0.0)
        with _AnalysisMode(self.model):
            for inputs, n_points in paths:
                result = _path_conductance(
                    self.model, self.layers, inputs, n_points, batch_steps, self.progress
                )
                for name, c in result.cond.items():
                    if c is not None:
                        scores[name] += float(c.abs().mean())  # mean(|cond|) per image, summed
        return scores


class MaskAttributeConductance(_ConductanceBase):
    """Mask Attribute Conductance of every layer (Eq. 9) on images, along the mask path.

    ``MaskAttributeConductance(model).attribute(images)`` returns ``{layer: score}`` in layer order;
    ``layers`` defaults to :func:`ramir.attributable_layers` (the reference's hook list). ``progress``
    (optional) is called with the number of path points done after every batch.
    """

    def attribute(
        self,
        images: torch.Tensor,
        *,
        steps: int = 200,
        ratio: float = 0.5,
        sharpness: float = 1e4,
        permutations: Sequence[torch.Tensor] | None = None,
        batch_steps: int | None = None,
        generator: torch.Generator | None = None,
        order: str = "random",
        mask_generator: nn.Module | None = None,
        baseline: torch.Tensor | float = 0.0,
    ) -> dict[str, float]:
        """Scores for ImageNet-normalised images (N, 3, H, W); one pixel order per image.

        ``permutations`` fixes the pixel order of each image ((H*W,) long tensors); otherwise each is
        drawn with ``torch.randperm`` from ``generator`` (default: seeded with 0), or, with
        ``order="adasam"``, is RAM++'s order from the trained ``mask_generator`` (:func:`adasam_order`;
        the images must then be its ``img_size``). ``baseline`` is the masked image x' where the path
        starts: 0 (the mean colour in normalised space, RAM's), another constant, or a tensor (one for
        all images or one per image).
        """
        if not sharpness > 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}")
        images = _prepare_images(self.model, images)
        alphas = path_alphas(steps, ratio)
        perms = _draw_permutations(images, permutations, generator, order, mask_generator)
        paths = (
            (_mask_path(images[i : i + 1], perms[i], alphas, sharpness,
                        base=_baseline_of(images[i : i + 1], baseline, i)), steps)
            for i in range(len(perms))
        )
        return self._scores(paths, batch_steps)


class LinearPathConductance(_ConductanceBase):
    """Layer conductance along the straight line from the zero image (the paper's IG baseline, Table 5).

    ``steps`` = T differences: points ``(t/T) x`` for t = 0..T, so the path reaches the whole image.
    """

    def attribute(
        self, images: torch.Tensor, *, steps: int = 200, batch_steps: int | None = None,
        baseline: torch.Tensor | float = 0.0,
    ) -> dict[str, float]:
        """Scores for ImageNet-normalised images (N, 3, H, W), from ``baseline`` (as MAC's) to each."""
        if steps < 1:
            raise ValueError(f"integrated gradients needs at least 1 step, got {steps}")
        images = _prepare_images(self.model, images)
        paths = (
            (_linear_path(images[i : i + 1], steps,
                          None if _is_zero(baseline) else _baseline_of(images[i : i + 1], baseline, i)),
             steps + 1)
            for i in range(images.shape[0])
        )
        return self._scores(paths, batch_steps)


def _is_zero(baseline: torch.Tensor | float) -> bool:
    return not isinstance(baseline, torch.Tensor) and float(baseline) == 0.0


def layer_output_bytes(model: nn.Module, image: torch.Tensor, layers: Sequence[str] | None = None) -> int:
    """Bytes of all layer outputs for one (1, C, H, W) input: what MAC holds per point and per layer."""
    analysis = _ConductanceBase(model, layers)
    x = _prepare_images(analysis.model, image)[:1]
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        tensor = _first_tensor(output)
        if tensor is not None:
            total += tensor.numel() * tensor.element_size()

    handles = [analysis.model.get_submodule(name).register_forward_hook(hook) for name in analysis.layers]
    try:
        with _AnalysisMode(analysis.model), torch.no_grad():
            analysis.model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def suggest_batch_steps(model: nn.Module, image: torch.Tensor, memory_bytes: int, *, limit: int = 16) -> int:
    """A ``batch_steps`` whose peak memory should stay within ``memory_bytes`` (at least 1, at most limit).

    With S the bytes of all layer outputs of one point (:func:`layer_output_bytes`), MAC holds about
    4.5 S for the whole run (running conductances, previous and current outputs, temporaries) plus up to
    2.5 S per batched point (autograd graph, captured outputs); fitted to peak RSS on CPU for RAM-SwinIR
    (S = 1 GB at 64x64: 6.6 GB unbatched, 11.3 GB with 4 steps per pass) and ram-swinir-small.
    """
    per_point = layer_output_bytes(model, image)
    if per_point == 0:
        return limit
    return max(1, min(limit, int((memory_bytes - 4.5 * per_point) / (2.5 * per_point))))


def mac_scores(
    model: nn.Module,
    images: torch.Tensor,
    *,
    steps: int = 200,
    ratio: float = 0.5,
    sharpness: float = 1e4,
    permutations: Sequence[torch.Tensor] | None = None,
    batch_steps: int | None = None,
    generator: torch.Generator | None = None,
    order: str = "random",
    mask_generator: nn.Module | None = None,
) -> dict[str, float]:
    """MAC score of every attributable layer, summed over the (normalised) images; see the module doc.

    ``order="adasam", mask_generator=G`` is RAM++'s MAC: pixels revealed in G's order, not at random."""
    return MaskAttributeConductance(model).attribute(
        images,
        steps=steps,
        ratio=ratio,
        sharpness=sharpness,
        permutations=permutations,
        batch_steps=batch_steps,
        generator=generator,
        order=order,
        mask_generator=mask_generator,
    )


def integrated_gradients_scores(
    model: nn.Module, images: torch.Tensor, *, steps: int = 200, batch_steps: int | None = None
) -> dict[str, float]:
    """Baseline: the same per-layer conductance score along the linear path ``x_t = (t/T) x``."""
    return LinearPathConductance(model).attribute(images, steps=steps, batch_steps=batch_steps)


def random_scores(model: nn.Module, seed: int = 0) -> dict[str, float]:
    """Baseline: uniform random scores, i.e. a random ranking of the attributable layers."""
    layers = attributable_layers(unwrap(model))
    values = torch.rand(len(layers), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {name: float(v) for name, v in zip(layers, values, strict=True)}


def conductance_sums(
    model: nn.Module,
    image: torch.Tensor,
    *,
    path: str = "mask",
    steps: int = 200,
    ratio: float = 0.5,
    sharpness: float = 1e4,
    perm: torch.Tensor | None = None,
    batch_steps: int | None = None,
    layers: Sequence[str] | None = None,
    truncate: bool = True,
    baseline: torch.Tensor | float = 0.0,
) -> tuple[dict[str, float], float, float]:
    """Per layer the conductance summed over all units (signed), and F at both ends of the path.

    Completeness: for a layer that cuts the network (every path from input to output goes through it)
    the sum approaches ``F(x_end) - F(x_start)`` as a *continuous* path is refined: the linear path,
    or the mask path with ``truncate=False`` (see :func:`soft_mask`). :func:`completeness_delta` gives
    the gap directly.
    """
    analysis = _ConductanceBase(model, layers)
    x = _prepare_images(analysis.model, image)[:1]
    base = _baseline_of(x, baseline)
    if path == "mask":
        if perm is None:
            perm = torch.randperm(x.shape[-2] * x.shape[-1], generator=torch.Generator().manual_seed(0))
        alphas = path_alphas(steps, ratio)
        inputs, n_points = _mask_path(x, perm, alphas, sharpness, truncate, base=base), steps
    elif path == "linear":
        inputs, n_points = _linear_path(x, steps, None if _is_zero(baseline) else base), steps + 1
    else:
        raise ValueError(f"unknown path {path!r}; use 'mask' or 'linear'")
    with _AnalysisMode(analysis.model):
        result = _path_conductance(analysis.model, analysis.layers, inputs, n_points, batch_steps)
    sums = {name: 0.0 if c is None else float(c.double().sum()) for name, c in result.cond.items()}
    return sums, result.f_start, result.f_end


def completeness_delta(model: nn.Module, image: torch.Tensor, **kwargs: Any) -> dict[str, float]:
    """Per layer, its summed conductance minus the change of F along the path, relative to that change:
    near 0 for a layer that cuts the network on a fine, continuous path (a check of the attribution
    itself, as captum's ``return_convergence_delta``). Keyword arguments as :func:`conductance_sums`."""
    sums, f_start, f_end = conductance_sums(model, image, **kwargs)
    change = f_end - f_start
    scale = abs(change) if change != 0 else 1.0
    return {name: (total - change) / scale for name, total in sums.items()}
