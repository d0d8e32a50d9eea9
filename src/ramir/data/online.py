"""Online degradations from a recipe: ``{kind: noise, sigma: [0, 50]}`` -> a picklable callable.

Each kind maps to one ``random_*`` function; its keyword arguments are the keys the recipe may set
(anything else raises :class:`ConfigError`), and their defaults are the ranges used when a key is
left out. A range is a number (fixed), ``[lo, hi]`` (uniform) or ``{choice: [...]}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramir.data import degradations as deg
from ramir.data import streaks
from ramir.data import synthetic as syn
from ramir.data import variants as var
from ramir.data.kernels import load_levin_kernels
from ramir.errors import ConfigError, reject_unknown_keys


def identity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The clean image itself: RAM's fourth LSDIR source, so the network learns to leave clean input alone."""
    return img.copy()


def random_poisson(
    img: np.ndarray, rng: np.random.Generator, *, strength: deg.Range = (0.5, 4.0)
) -> np.ndarray:
    return deg.poisson_noise(img, deg.sample_range(strength, rng), rng)


def random_speckle(
    img: np.ndarray, rng: np.random.Generator, *, strength: deg.Range = (0.05, 0.3)
) -> np.ndarray:
    return deg.speckle_noise(img, deg.sample_range(strength, rng), rng)


def random_salt_pepper(
    img: np.ndarray, rng: np.random.Generator, *, strength: deg.Range = (0.005, 0.05)
) -> np.ndarray:
    return deg.salt_and_pepper(img, deg.sample_range(strength, rng), rng)


def _default_range(fn: Callable[..., np.ndarray], key: str) -> str:
    """The range ``fn`` draws ``key`` from by default, read from its signature so that help texts
    never drift from the code."""
    lo, hi = inspect.signature(fn).parameters[key].default
    return f"default random in {lo:g}-{hi:g}"


@dataclass(frozen=True)
class DegradationKind:
    """One kind of degradation, the same for training and evaluation.

    ``draw(img, rng, **keys)`` is a random draw (training; its keyword-only arguments are the recipe's
    keys). Evaluation fixes a LEVEL: for the kinds with a test protocol of the reference (noise, blur,
    JPEG and the out-of-distribution noises) :func:`ramir.data.degradations.degrade_for_test`, for the
    others ``draw`` with its ``level`` keyword fixed."""

    draw: Callable[..., np.ndarray]
    help: str
    level: str | None = None  # the keyword of ``draw`` a LEVEL fixes (None: the test protocol's)


def _synthetic(draw: Callable[..., np.ndarray], text: str, level: str) -> DegradationKind:
    """A synthetic kind whose LEVEL fixes ``level``; its help ends with the default range."""
    sep = "; " if not text.endswith("(") else ""
    return DegradationKind(draw, f"{text}{sep}{_default_range(draw, level)})", level)


# canonical name -> kind; ALIASES maps the other spellings in use (recipes say identity, lowlight)
DEGRADATIONS: dict[str, DegradationKind] = {
    "none": DegradationKind(
        identity, "no degradation: the clean photo itself (what a model must leave alone)"),
    "noise": DegradationKind(
        deg.random_noise, "additive Gaussian noise, LEVEL = sigma on 0-255 (paper: 15, 25, 50)"),
    "blur": DegradationKind(deg.random_blur, "Gaussian blur, 15x15 kernel, LEVEL = sigma (default 2.0)"),
    "jpeg": DegradationKind(deg.random_jpeg, "JPEG compression, LEVEL = quality (default 50)"),
    "haze": _synthetic(syn.random_haze, "synthetic haze, LEVEL = beta (thickness", "beta"),
    "rain": _synthetic(syn.random_rain, "synthetic rain streaks, LEVEL = density (", "density"),
    "rain_transfer": _synthetic(
        streaks.random_rain_transfer, "rain streaks of a paired rain set (bank: FOLDER) on the photo, "
        "LEVEL = strength (", "strength"),
    "low_light": _synthetic(syn.random_low_light, "synthetic low light, LEVEL = exposure (", "exposure"),
    "motion": _synthetic(syn.random_motion_blur, "synthetic camera-shake blur, LEVEL = path length in px (",
                         "length"),
    # variants of the families (ramir.data.variants): broader training, and the unseen-variant split
    "aniso_blur": _synthetic(var.random_aniso_blur, "oriented Gaussian blur, LEVEL = major sigma (", "sigma"),
    "defocus": _synthetic(var.random_defocus, "out-of-focus disc blur, LEVEL = radius in px (", "radius"),
    "gg_blur": _synthetic(var.random_gg_blur, "generalised-Gaussian (plateau) blur, LEVEL = sigma (",
                          "sigma"),
    "shake": _synthetic(var.random_shake, "camera shake of the Boracchi-Foi trajectory model, LEVEL = "
                        "path length in px (", "length"),
    "linear_motion": _synthetic(var.random_linear_motion, "straight uniform motion blur, LEVEL = length "
                                "in px (", "length"),
    "poisson_gaussian": _synthetic(var.random_poisson_gaussian, "signal-dependent sensor noise, LEVEL = "
                                   "shot std at full scale (", "shot"),
    "correlated_noise": _synthetic(var.random_correlated_noise, "channel-correlated Gaussian noise, LEVEL = "
                                   "sigma on 0-255 (", "sigma"),
    "spatial_noise": _synthetic(var.random_spatial_noise, "spatially correlated (grainy) noise, LEVEL = "
                                "sigma on 0-255 (", "sigma"),
    "impulse": _synthetic(var.random_impulse, "random-valued impulse noise, grey or per channel, LEVEL = "
                          "fraction of values (", "fraction"),
    "camera_noise": _synthetic(var.random_camera_noise, "sensor noise through an in-camera pipeline "
                               "(mosaic, demosaic, gamma, JPEG), LEVEL = shot std (", "shot"),
    "jpeg_variant": _synthetic(var.random_jpeg_variant, "JPEG with chroma subsampling and double "
                               "compression, LEVEL = quality (", "quality"),
    "colour_haze": _synthetic(var.random_colour_haze, "haze with coloured airlight, LEVEL = beta (", "beta"),
    "cast_low_light": _synthetic(var.random_cast_low_light, "low light under a coloured illuminant, "
                                 "LEVEL = exposure (", "exposure"),
    "zoom": _synthetic(var.random_zoom, "the centre enlarged to the full size (the pixel-level softness of "
                       "a multi-megapixel photo; a base, not a degradation), LEVEL = scale (", "scale"),
    "chain": DegradationKind(
        lambda img, rng, **_: img, "several degradations in a row (steps: [spec, ...], shuffle: 0|1)"),
    "poisson": DegradationKind(
        random_poisson, "out of distribution: Poisson shot noise, LEVEL = strength (1 = one photon "
        "per level)"),
    "speckle": DegradationKind(
        random_speckle, "out of distribution: multiplicative noise, LEVEL = std (e.g. 0.1, 0.2)"),
    "salt_pepper": DegradationKind(
        random_salt_pepper, "out of distribution: impulse noise, LEVEL = fraction of pixels (e.g. 0.01, "
        "0.05)"),
}
ALIASES = {
    "identity": "none", "clean": "none", "lowlight": "low_light", "saltpepper": "salt_pepper",
    "sp": "salt_pepper", "gaussian": "noise",
}


def canonical_kind(name: str) -> str:
    """The registry's name for a degradation spelled any accepted way (``lowlight`` -> ``low_light``)."""
    k = str(name).strip().lower().replace("-", "_")
    k = ALIASES.get(k, k)
    if k not in DEGRADATIONS:
        raise ConfigError(f"unknown degradation {name!r}; choose from {', '.join(DEGRADATIONS)}")
    return k


def degrade_at_level(
    clean01: np.ndarray, kind: str, level: float | None, seed: int, options: dict | None = None
) -> np.ndarray:
    """A deterministic degradation for evaluation: the same (image, kind, level, seed), the same output;
    float32 RGB in [0, 1]. ``level`` None draws the kind's own default (see its help); ``options`` are
    further recipe keys of the kind (absolute paths), e.g. a rain_transfer ``bank``."""
    name = canonical_kind(kind)
    entry = DEGRADATIONS[name]
    if name == "none":
        return np.asarray(clean01, dtype=np.float32).copy()
    if options:
        spec = {"kind": name, **options}
        if level is not None and entry.level is not None:
            spec[entry.level] = float(level)
        out = build_degradation(spec)(clean01, np.random.default_rng(seed))
    elif entry.level is not None:
        kwargs = {} if level is None else {entry.level: float(level)}
        out = entry.draw(clean01, np.random.default_rng(seed), **kwargs)
    else:
        out = deg.degrade_for_test(clean01, name, level, seed)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _options(kind: str) -> dict[str, Any]:
    """Keyword-only parameters of the kind's function (the keys a recipe may set) and their defaults."""
    sig = inspect.signature(DEGRADATIONS[kind].draw)
    return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n != "bgr"}


@dataclass(frozen=True)
class Degradation:
    """``degradation(img, rng)``: one random draw of ``kind`` with ``params`` (parsed ranges)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the recipe text, for reports

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return DEGRADATIONS[self.kind].draw(img, rng, **self.params).astype(np.float32, copy=False)

    def __str__(self) -> str:
        return self.source or self.kind


@dataclass(frozen=True)
class Chain:
    """``chain(img, rng)``: several degradations applied one after the other (a photo blurred, then noisy,
    then saved as JPEG). ``shuffle`` is the probability of a random order and ``drop`` that of skipping
    each step (at least one is kept): with both, the "high-order" random composites of Real-ESRGAN/BSRGAN."""

    steps: tuple[Degradation | Chain, ...]
    shuffle: float = 0.0
    drop: float = 0.0
    source: str = ""
    kind: str = "chain"

    @property
    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "shuffle": self.shuffle, "drop": self.drop}

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        order = list(range(len(self.steps)))
        if self.shuffle > 0 and rng.random() < self.shuffle:
            order = [int(i) for i in rng.permutation(len(order))]
        if self.drop > 0:
            keep = [i for i in order if rng.random() >= self.drop]
            order = keep or [order[int(rng.integers(len(order)))]]
        out = np.asarray(img, dtype=np.float32)
        for i in order:
            out = np.clip(self.steps[i](out, rng), 0.0, 1.0).astype(np.float32, copy=False)
        return out

    def __str__(self) -> str:
        return self.source or "chain"


def _build_chain(spec: dict, base_dir: str | Path | None, load: bool) -> Chain:
    reject_unknown_keys({k: v for k, v in spec.items() if k != "kind"}, {"steps", "shuffle", "drop"},
                        "degradation 'chain'")
    steps = spec.get("steps")
    if not isinstance(steps, list | tuple) or not steps:
        raise ConfigError("degradation 'chain' needs 'steps: [spec, ...]' (at least one degradation)")
    built = tuple(build_degradation(step, base_dir=base_dir, load=load) for step in steps)
    probs = {}
    for key in ("shuffle", "drop"):
        value = spec.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"degradation chain.{key}: expected a probability in [0, 1], got {value!r}")
        probs[key] = float(value)
    text = " -> ".join(str(b) for b in built)
    return Chain(built, probs["shuffle"], probs["drop"], f"chain({text})")


PATH_KEYS = ("kernels", "bank", "bank_only", "bank_exclude")  # recipe keys that name files


def resolve_paths(spec: dict, base_dir: str | Path | None) -> dict:
    """``spec`` with its file keys (:data:`PATH_KEYS`) made absolute against ``base_dir`` (a recipe's
    folder), so a parsed recipe reads the same files wherever it is run from."""
    if base_dir is None:
        return spec
    out = dict(spec)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str | Path):
            path = Path(out[key]).expanduser()
            out[key] = str(path if path.is_absolute() else Path(base_dir) / path)
    return out


def build_degradation(
    spec: dict | str | None, *, base_dir: str | Path | None = None, load: bool = True
) -> Degradation | Chain:
    """Parse a recipe's ``degradation:`` entry (a mapping with ``kind``, or just the kind's name).

    ``preset: paper|reference`` (noise, blur, jpeg) picks the paper's or the reference code's ranges;
    ``kernels: PATH`` (motion) loads real kernels from a MATLAB file, relative to ``base_dir``;
    ``kind: chain`` takes ``steps`` (a list of such entries) and applies them in turn (:class:`Chain`);
    ``bank: FOLDER`` (rain_transfer) a paired rain folder whose streaks are drawn, with optional
    ``bank_only`` / ``bank_exclude`` name lists (``load=False`` only validates the spec and leaves the
    paths unread).
    """
    if spec is None:
        spec = {"kind": "none"}
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ConfigError(
            f"a degradation needs a 'kind' (one of {', '.join(DEGRADATIONS)}), got {spec!r}"
        )
    kind = canonical_kind(spec["kind"])
    if kind == "chain":
        return _build_chain(spec, base_dir, load)  # type: ignore[return-value]
    options = _options(kind)
    allowed = set(options) | ({"preset"} if kind in deg.PRESETS["paper"] else set())
    if kind == "rain_transfer":
        allowed |= {"bank_only", "bank_exclude"}
        if "bank" not in spec:
            raise ConfigError("degradation 'rain_transfer' needs 'bank: FOLDER' (rainy/clean pairs)")
    spec = resolve_paths(spec, base_dir)
    reject_unknown_keys({k: v for k, v in spec.items() if k != "kind"}, allowed, f"degradation {kind!r}")
    params: dict[str, Any] = {}
    if "preset" in spec:
        if spec["preset"] not in deg.PRESETS:
            raise ConfigError(f"degradation {kind!r}: preset must be one of {', '.join(deg.PRESETS)}")
        params.update(deg.PRESETS[spec["preset"]][kind])
    for key, value in spec.items():
        if key in ("kind", "preset"):
            continue
        name = f"degradation {kind}.{key}"
        if key == "kernel_size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
                raise ConfigError(f"{name}: expected an odd positive integer, got {value!r}")
            params[key] = value
        elif key in ("bank", "bank_only", "bank_exclude"):  # the bank reads its name lists itself
            if not isinstance(value, str | Path):
                raise ConfigError(f"{name}: expected a path, got {value!r}")
            if key == "bank":
                params[key] = (
                    streaks.load_streak_bank(
                        str(value), only=spec.get("bank_only"), exclude=spec.get("bank_exclude"))
                    if load else str(value)
                )
        elif isinstance(options.get(key), bool):  # a switch (zoom's whole)
            if not isinstance(value, bool):
                raise ConfigError(f"{name}: expected true or false, got {value!r}")
            params[key] = value
        elif key == "kernels":
            if not isinstance(value, str | Path):
                raise ConfigError(f"{name}: expected a path to a .mat file, got {value!r}")
            params[key] = load_levin_kernels(Path(value)) if load else Path(value)
        else:
            r = deg.parse_range(value, name)
            lo = min(r.values) if isinstance(r, deg.Choice) else r[0] if isinstance(r, tuple) else r
            if lo < 0 and key != "angle":  # the rain angle is signed; everything else is a size or level
                raise ConfigError(f"{name}: values must be >= 0, got {value!r}")
            params[key] = r
    text = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "kind" and k not in PATH_KEYS)
    if "bank" in spec:
        text = ", ".join(filter(None, [text, f"bank={Path(spec['bank']).name}"]))
    if "kernels" in spec:
        text = ", ".join(filter(None, [text, f"kernels={Path(spec['kernels']).name}"]))
    return Degradation(kind, params, f"{kind}({text})" if text else kind)


def degradation_options() -> dict[str, dict[str, Any]]:
    """Every kind with its settable keys and default ranges (for the docs and ``--help``)."""
    return {k: _options(k) for k in DEGRADATIONS if k != "chain"}
