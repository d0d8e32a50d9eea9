"""A degradation-routed network: a small classifier picks one expert restorer per image.

Why: measured on the validation split, one small network trained on the whole mix learns almost
nothing of blur, JPEG or motion (the same ``nafnet-s`` trained on Gaussian blur alone gains 2.8 dB
in 3,000 iterations, inside the mix 0.0 dB): denoising asks it to smooth and deblurring to sharpen,
and a blind network that cannot tell which it faces learns a compromise. Routing gives each expert
one family of degradations, so each is as good as a single-task network, while the user still
gets one model that is told nothing (the expert-routing idea of mixture-of-experts restorers such
as MoCE-IR, at the granularity of a whole image).

* :class:`DegradationRouter`: a fully convolutional classifier; it pools feature statistics (mean and
  standard deviation) at full resolution, where noise, JPEG blocks and blur show, and after four
  stride-2 stages, where haze and low light show. It sees at most ``route_size`` x ``route_size``
  pixels at native resolution (a centre crop): never a downscaled image, which would hide exactly
  the fine-scale artefacts it must find.
* :class:`RoutedNetwork`: the router and the experts. ``classes[i]`` is the router's i-th class and
  ``class_to_expert[i]`` the expert restoring it, or ``-1`` for "leave the image as it is" (the clean
  class). Like every ramir network it maps ImageNet-normalised RGB to ImageNet-normalised RGB; the
  experts are plain networks of the registry, so RAM (masking, MAC, selective fine-tuning) trains
  each of them as it trains any network.

``ramir.inference`` routes once per image (on the whole image, before tiling) and restores every tile
with the chosen expert, so tiles never disagree; calling the module directly routes each input.

**Large photos: a second look at the training photos' scale** (``scale_check``). The training photos
(0.15 MP) were shrunk from camera images and are sharp at the pixel level; a multi-megapixel photo is
soft there, and its native-resolution crop looks blurred to the router even when the photo is not
(whole camera photos with real noise went to the deblurring expert, which sharpened the noise). When the
short side is at least twice ``scale_check``, the router also looks at the whole image shrunk to that
short side (:func:`second_look`); if blur is not seen there (the ``scale_classes`` together below
``scale_threshold``), those classes are struck from the native-resolution probabilities and the rest
renormalised (:func:`discount_scale`): what remains is the router's view of everything but sharpness.
A blur that is real survives the shrinking, and with ``scale_restore`` its expert then works at that
scale too (:func:`restore_small`: the expert's change to the shrunk photo, enlarged, is added to the
photo): a 40-px shake on a photo enlarged 2.5 times is out of the expert's reach at native resolution
and a 16-px one at the shrunk scale. Chosen on ``configs/eval/validation_large.yaml``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from ramir.archs.descriptor import Architecture
from ramir.ensemble import parse_views, symmetries
from ramir.imagespace import denormalize, normalize


def _stats(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over the pixels: (N, 2C)."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)


def blockiness(x: torch.Tensor, period: int = 8) -> torch.Tensor:
    """JPEG's 8x8 block grid, whatever its phase: (N, 2 * period) log-ratios.

    The mean absolute difference between neighbouring columns (rows) is averaged by column (row)
    index modulo ``period`` and sorted, so a grid at any offset gives the same features: a blocky image
    has one phase whose differences stand out. Small convolutions pooled over the image do not see this
    periodic structure, which is why it is computed explicitly.
    """
    feats = []
    for dim in (-1, -2):
        d = (x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)).abs().mean(1)
        d = d.mean(-2 if dim == -1 else -1)  # (N, length - 1): one value per column (row) boundary
        usable = (d.shape[-1] // period) * period
        if usable == 0:
            feats.append(torch.zeros(x.shape[0], period, dtype=x.dtype, device=x.device))
            continue
        phases = d[:, :usable].reshape(x.shape[0], -1, period).mean(1)
        phases = phases / (phases.mean(1, keepdim=True) + 1e-6)
        feats.append(torch.log(phases.sort(dim=1, descending=True).values + 1e-6))
    return torch.cat(feats, dim=1)


class DegradationRouter(nn.Module):
    """The degradation class of an ImageNet-normalised image of any size: (N, 3, H, W) -> (N, classes)."""

    def __init__(self, classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.full = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(inplace=True))
        chans = [w, 2 * w, 2 * w, 4 * w, 4 * w]
        stages: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            stages += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.down = nn.Sequential(*stages)
        features = 2 * (3 + w + chans[-1]) + 16
        # the pooled statistics differ in scale by orders of magnitude (a noise std next to a mean): a
        # LayerNorm puts them on one scale before the classifier, which speeds its training up a lot
        self.head = nn.Sequential(
            nn.LayerNorm(features), nn.Linear(features, 64), nn.ReLU(inplace=True), nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.full(x)
        f1 = self.down(f0)
        return self.head(torch.cat([_stats(x), _stats(f0), _stats(f1), blockiness(x)], dim=1))


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, separable; at the borders over the pixels inside the image."""
    k = 2 * radius + 1
    x = nn.functional.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)
    return nn.functional.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)


def guided_filter(guide: torch.Tensor, target: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: ``target`` re-expressed, per window, as an affine function of ``guide``
    (N, 1, H, W) — what is affine in the input (a tone curve, dehazing with a smooth transmission) is
    kept, what is not (a grid the network printed over a flat sky) is removed."""
    mean_i, mean_p = _box(guide, radius), _box(target, radius)
    cov = _box(guide * target, radius) - mean_i * mean_p
    var = _box(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


class GuidedRefine(nn.Module):
    """An expert whose output is passed through :func:`guided_filter` guided by its input's luma.

    Why: the tone expert (haze, low light) raises contrast a lot, and with it the faint 8x8 blocks of
    the JPEG photos it was trained on: a grid over skies (validation haze: lattice energy 12.7x the
    clean photos'). Dehazing and brightening are locally affine in the input, the grid is not; the
    filter removes it and gains PSNR (benchmarks/artefacts.py, docs/default-model.md). It has no
    weights: the checkpoint records only ``refine`` settings."""

    def __init__(self, expert: nn.Module, radius: int, eps: float) -> None:
        super().__init__()
        self.expert, self.radius, self.eps = expert, int(radius), float(eps)
        self.size_multiple = int(getattr(expert, "size_multiple", 1))
        self.graph_settings = {"guided_refine": [self.radius, self.eps]}  # told to the ONNX cache key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reflect-pad to the expert's multiple first (as the onnxruntime runner does before calling a
        # graph), so the filter sees the same border whichever backend runs it
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            x = nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
        x01 = denormalize(x)
        y01 = denormalize(self.expert(x))
        luma = (0.299 * x01[:, :1] + 0.587 * x01[:, 1:2] + 0.114 * x01[:, 2:3])
        return normalize(guided_filter(luma, y01, self.radius, self.eps))[..., :h, :w]


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` (at most), its corner on the 8-pixel grid (JPEG's blocks stay whole)."""
    h, w = x.shape[-2:]
    if h <= size and w <= size:
        return x
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
    return x[..., top : top + ch, left : left + cw]


def _resize(x: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """(N, C, H, W) float32 images resized by OpenCV to ``size`` = (width, height)."""
    out = [cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), size, interpolation=interpolation)
           for img in np.asarray(x, dtype=np.float32)]
    return np.stack([o.reshape(size[1], size[0], -1).transpose(2, 0, 1) for o in out])


def second_look(x: np.ndarray, side: int) -> np.ndarray:
    """(N, C, H, W) float32 images shrunk by area averaging so that the short side is ``side`` px (the
    scale of the router's training photos); numpy, so that PyTorch and onnxruntime routing share it."""
    h, w = x.shape[-2:]
    f = min(h, w) / float(side)
    return _resize(x, (max(1, round(w / f)), max(1, round(h / f))), cv2.INTER_AREA)


def restore_small(x: np.ndarray, side: int, expert: Any) -> np.ndarray:
    """An expert applied at the second look's scale: ``x`` (N, C, H, W) shrunk (:func:`second_look`), the
    expert's change to it enlarged back (bicubic) and added to ``x``, so the photo's own fine detail stays.
    ``expert`` maps an (N, C, h, w) float32 numpy array to one of the same shape."""
    small = second_look(x, side)
    change = np.asarray(expert(small), dtype=np.float32) - small
    h, w = x.shape[-2:]
    return np.asarray(x, dtype=np.float32) + _resize(change, (w, h), cv2.INTER_CUBIC)


def discount_scale(p: Sequence[float], q: Sequence[float], struck: Sequence[int], threshold: float
                   ) -> list[float]:
    """Class probabilities ``p`` (native resolution) with the ``struck`` classes removed and the rest
    renormalised, unless the second look ``q`` gives them together at least ``threshold``."""
    p = [float(v) for v in p]
    if sum(float(q[i]) for i in struck) >= threshold:
        return p
    kept = [0.0 if i in struck else v for i, v in enumerate(p)]
    total = sum(kept)
    return [v / total for v in kept] if total > 0 else p


def choose_class(p: Sequence[float], class_expert: Sequence[str | None], keep_threshold: float,
                 doubt_experts: Sequence[str] | None = None, doubt_floor: float = 0.0) -> int:
    """The class chosen from probabilities ``p``: the most probable, except that a class whose image is
    left unchanged (``class_expert`` None) needs ``keep_threshold``; below it the most probable class
    whose expert is in ``doubt_experts`` (None: every expert) and whose probability reaches
    ``doubt_floor`` wins, and the image is left as it is when there is none. Why a restriction can help:
    an expert chosen in doubt often meets clean photos, and only some leave a clean photo as it was (the
    tone expert brightens it by design); why the default model restricts no expert: lightly hazy photos
    also start in doubt, and need the tone expert (docs/routing.md). The floor leaves a photo alone when
    the router sees nothing to restore in it (every expert's class under a few per cent)."""
    best = max(range(len(p)), key=lambda i: p[i])
    if class_expert[best] is not None or p[best] >= keep_threshold:
        return best
    allowed = [i for i, e in enumerate(class_expert)
               if e is not None and (doubt_experts is None or e in doubt_experts) and p[i] >= doubt_floor]
    return max(allowed, key=lambda i: p[i]) if allowed else best


def _check_names(setting: str, given: Iterable[str], known: Sequence[str], kind: str) -> None:
    """One clear error when a setting names something the model does not have."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{setting} names {unknown[0]!r}, not {kind} ({', '.join(known)})")


class RoutedNetwork(nn.Module):
    """A router and experts; ``forward`` restores each image with the expert its class maps to."""

    def __init__(
        self,
        *,
        classes: Sequence[str],
        class_to_expert: Sequence[int],
        experts: Sequence[str],
        expert_arch: str = "nafnet",
        expert_kwargs: dict[str, Any] | None = None,
        expert_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        router_width: int = 16,
        route_size: int = 512,
        keep_threshold: float = 0.0,
        class_bias: Mapping[str, float] | None = None,
        doubt_experts: Sequence[str] | None = None,
        doubt_floor: float = 0.0,
        max_steps: int = 1,
        chain_threshold: float = 0.0,
        chain_after: Mapping[str, Sequence[str]] | None = None,
        refine: Mapping[str, Sequence[float]] | None = None,
        scale_check: int = 0,
        scale_threshold: float = 0.5,
        scale_classes: Sequence[str] = ("blur", "motion"),
        scale_restore: bool = False,
        ensemble_views: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        from ramir.archs import build_network

        if len(classes) != len(class_to_expert):
            raise ValueError("classes and class_to_expert need the same length")
        if not experts:
            raise ValueError("a routed network needs at least one expert")
        bad = [i for i in class_to_expert if not -1 <= int(i) < len(experts)]
        if bad:
            raise ValueError(f"class_to_expert holds {bad[0]}, not an expert index (or -1 for identity)")
        self.classes = list(classes)
        self.class_to_expert = [int(i) for i in class_to_expert]
        self.expert_names = list(experts)
        self.route_size = int(route_size)
        self.keep_threshold = float(keep_threshold)
        _check_names("class_bias", class_bias or {}, self.classes, "a class")
        self.class_bias = {str(k): float(v) for k, v in (class_bias or {}).items()}
        # the experts a doubtful "clean" may fall back to (choose_class); None: all, as before
        _check_names("doubt_experts", doubt_experts or [], experts, "an expert")
        self.doubt_experts = None if doubt_experts is None else [str(e) for e in doubt_experts]
        # the probability that fallback needs (0: any, as before); below it the photo is left alone
        if not 0.0 <= float(doubt_floor) < 1.0:
            raise ValueError(f"doubt_floor is a probability in [0, 1), got {doubt_floor}")
        self.doubt_floor = float(doubt_floor)
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        # the chain (ramir.routing): experts per image at most, and the router probability a step after
        # the first needs; recorded in the checkpoint like the priors, chosen on validation
        self.max_steps = int(max_steps)
        self.chain_threshold = float(chain_threshold)
        # expert -> the experts it may follow as a later step (ramir.routing.run_chain); unnamed: any
        _check_names("chain_after", chain_after or {}, experts, "an expert")
        for name, before in (chain_after or {}).items():
            if isinstance(before, str):
                raise ValueError(f"chain_after[{name!r}] must be a list of experts, got {before!r}")
            _check_names(f"chain_after[{name!r}]", before, experts, "an expert")
        self.chain_after = {str(k): [str(e) for e in v] for k, v in (chain_after or {}).items()}
        # expert name -> (radius, eps) of a GuidedRefine after it (no weights; settings in the checkpoint)
        _check_names("refine", refine or {}, experts, "an expert")
        self.refine = {str(k): (int(v[0]), float(v[1])) for k, v in (refine or {}).items()}
        # the second look of large photos (module docstring); 0 = off, as every model before it
        if int(scale_check) < 0:
            raise ValueError(f"scale_check is a short side in px (0: off), got {scale_check}")
        self.scale_check, self.scale_threshold = int(scale_check), float(scale_threshold)
        self.scale_classes = [str(c) for c in scale_classes]
        self.scale_restore = bool(scale_restore)
        if self.scale_check and not set(self.scale_classes) <= set(self.classes):
            raise ValueError(
                f"scale_classes {self.scale_classes} are not all classes ({', '.join(self.classes)})")
        # expert name -> the self-ensemble views it may take, in order, named in the checkpoint
        # (ramir.ensemble; unnamed: the standard order). Why: an expert whose degradation has a
        # direction (haze thickens towards the sky, rain falls) or a phase (a Bayer mosaic) is hurt by
        # some views; chosen on validation and recorded in the checkpoint like the priors
        _check_names("ensemble_views", ensemble_views or {}, experts, "an expert")
        self.ensemble_views: dict[str, list[tuple[bool, bool, bool]]] = {}
        for name, views in (ensemble_views or {}).items():
            try:
                self.ensemble_views[str(name)] = parse_views(views)
            except ValueError as exc:
                raise ValueError(f"ensemble_views[{name!r}]: {exc}") from None
        self.router = DegradationRouter(len(self.classes), router_width)
        # one expert may be built larger than the rest (a noise expert grown deeper keeps the others small)
        _check_names("expert_overrides", expert_overrides or {}, experts, "an expert")
        self.experts = nn.ModuleList(
            build_network(expert_arch, **expert_config(expert_kwargs, expert_overrides, name))
            for name in experts
        )
        multiples = {int(getattr(e, "size_multiple", 1)) for e in self.experts}
        self.size_multiple = max(multiples)

    def route_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The router's class logits of each image, from its centre ``route_size`` crop, plus
        ``class_bias``: a prior chosen on validation after training (e.g. towards the rain expert, whose
        cost on a clean photo is small while a missed light rain keeps all of its streaks)."""
        logits = self.router(centre_crop(x, self.route_size))
        if self.class_bias:
            bias = torch.tensor([self.class_bias.get(c, 0.0) for c in self.classes], device=logits.device)
            logits = logits + bias.to(logits.dtype)
        return logits

    def route_classes(self, x: torch.Tensor) -> list[int]:
        """The class of each image: the most probable one, except that a class whose images are left
        unchanged (expert -1) must have a probability of at least ``keep_threshold``, else the most
        probable class with an expert wins. Why: sending a degraded photo to "leave it" loses all of its
        restoration, while an expert given a clean photo changes it little (each keeps clean validation
        photos at 40-56 dB), so doubt should favour restoring. The threshold is chosen on validation."""
        return self.decide(x)[1]

    def decide(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The class probabilities (N, classes), float32, and the class chosen for each image
        (:meth:`route_classes`' rule)."""
        probs = torch.softmax(self.route_logits(x).float(), dim=1)
        if self.looks_twice(x):
            small = torch.from_numpy(second_look(x.detach().float().cpu().numpy(), self.scale_check))
            q = torch.softmax(self.route_logits(small.to(x.device, x.dtype)).float(), dim=1)
            struck = [self.classes.index(c) for c in self.scale_classes]
            rows = zip(probs.tolist(), q.tolist(), strict=True)
            probs = torch.tensor(
                [discount_scale(pi, qi, struck, self.scale_threshold) for pi, qi in rows], device=probs.device
            )
        class_expert = [self.expert_for(c) for c in self.classes]
        chosen = [choose_class(row, class_expert, self.keep_threshold, self.doubt_experts, self.doubt_floor)
                  for row in probs.tolist()]
        return probs, chosen

    def looks_twice(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is large enough for the second look (short side >= 2 ``scale_check``)."""
        return self.scale_check > 0 and min(x.shape[-2:]) >= 2 * self.scale_check

    def restores_small(self, name: str, x: torch.Tensor) -> bool:
        """Whether expert ``name`` works on ``x`` at the second look's scale (``scale_restore``: the
        experts of ``scale_classes``, on an image large enough for the second look)."""
        if not (self.scale_restore and self.looks_twice(x)):
            return False
        ks = {self.class_to_expert[self.classes.index(c)] for c in self.scale_classes}
        return name in {self.expert_names[k] for k in ks if k >= 0}

    def restore_small(self, x: torch.Tensor, expert: Any) -> torch.Tensor:
        """:func:`restore_small` on a tensor at this model's ``scale_check``: ``expert`` maps a tensor
        (on ``x``'s device and dtype) to one of the same shape; the result is not clamped."""

        def run(a: np.ndarray) -> np.ndarray:
            return expert(torch.from_numpy(a).to(x.device, x.dtype)).float().cpu().numpy()

        y = restore_small(x.detach().float().cpu().numpy(), self.scale_check, run)
        return torch.from_numpy(y).to(x.device, x.dtype)

    def decide_one(self, x: torch.Tensor) -> tuple[dict[str, float], str]:
        """One image's class probabilities by class name, and the class :meth:`decide` chooses."""
        probs, chosen = self.decide(x[:1])
        return dict(zip(self.classes, probs[0].tolist(), strict=True)), self.classes[chosen[0]]

    def expert_for(self, label: str) -> str | None:
        """The name of the expert restoring class ``label`` (None: images of that class are left alone)."""
        k = self.class_to_expert[self.classes.index(label)]
        return None if k < 0 else self.expert_names[k]

    def route(self, x: torch.Tensor) -> list[int]:
        """The expert index of each image (-1: leave it unchanged)."""
        return [self.class_to_expert[c] for c in self.route_classes(x)]

    def route_names(self, x: torch.Tensor) -> list[str]:
        """The router's class name of each image (what ``ramir restore`` reports)."""
        return [self.classes[c] for c in self.route_classes(x)]

    def views_for(self, name: str, asked: int) -> list[tuple[bool, bool, bool]]:
        """The self-ensemble views expert ``name`` runs when ``asked`` are asked for: the first ``asked``
        of those it may take."""
        if name not in self.ensemble_views:
            return symmetries(asked)
        return self.ensemble_views[name][: int(asked)]

    def expert_module(self, k: int) -> nn.Module:
        """Expert ``k`` as it restores: wrapped in its :class:`GuidedRefine` when ``refine`` names it."""
        name = self.expert_names[k]
        if name in self.refine:
            radius, eps = self.refine[name]
            return GuidedRefine(self.experts[k], radius, eps)
        return self.experts[k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, k in enumerate(self.route(x)):
            xi = x[i : i + 1]
            if k < 0:
                outs.append(xi.clone())
            elif self.restores_small(self.expert_names[k], xi):
                outs.append(self.restore_small(xi, self.expert_module(k)))
            else:
                outs.append(self.expert_module(k)(xi))
        return torch.cat(outs, dim=0)



def expert_config(
    expert_kwargs: Mapping[str, Any] | None,
    expert_overrides: Mapping[str, Mapping[str, Any]] | None,
    name: str,
) -> dict[str, Any]:
    """The constructor keywords of expert ``name``: the shared ones, then its own overrides."""
    return {**dict(expert_kwargs or {}), **dict((expert_overrides or {}).get(name) or {})}


def build_routed(expert_arch: str, expert_kwargs: dict[str, Any], **kwargs: Any) -> RoutedNetwork:
    """A routed network through the registry (so that its checkpoints carry their config)."""
    from ramir.archs import build_network

    return build_network("routed", expert_arch=expert_arch, expert_kwargs=dict(expert_kwargs), **kwargs)


# ------------------------------------------------------------------------------------- descriptor
def _expert_fact(fact: str):
    """A fact of the experts' architecture, the largest over the experts (the router's own memory is
    negligible beside theirs)."""
    def read(kw: dict[str, Any]) -> int:
        from ramir.archs import architecture

        expert = architecture(kw.get("expert_arch", "nafnet"))
        overrides = kw.get("expert_overrides") or {}
        configs = [expert_config(kw.get("expert_kwargs"), overrides, n) for n in ["", *overrides]]
        return max(getattr(expert, fact)(c) for c in configs)

    return read


ARCHITECTURE = Architecture(
    name="routed", display_name="routed network", network=RoutedNetwork,
    size_multiple=_expert_fact("size_multiple"),
    bytes_per_pixel=_expert_fact("bytes_per_pixel"),
    exportable=False,  # routing is a per-image choice made in Python: export one expert at a time
)
