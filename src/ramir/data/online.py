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
from ramir.data import synthetic as syn
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


# kind -> its random function; the function's keyword-only arguments are the recipe's keys
DEGRADATION_KINDS: dict[str, Callable[..., np.ndarray]] = {
    "identity": identity,
    "noise": deg.random_noise,
    "blur": deg.random_blur,
    "jpeg": deg.random_jpeg,
    "haze": syn.random_haze,
    "rain": syn.random_rain,
    "lowlight": syn.random_low_light,
    "motion": syn.random_motion_blur,
    "poisson": random_poisson,
    "speckle": random_speckle,
    "salt_pepper": random_salt_pepper,
}


def _options(kind: str) -> dict[str, Any]:
    """Keyword-only parameters of the kind's function (the keys a recipe may set) and their defaults."""
    sig = inspect.signature(DEGRADATION_KINDS[kind])
    return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n != "bgr"}


@dataclass(frozen=True)
class Degradation:
    """``degradation(img, rng)``: one random draw of ``kind`` with ``params`` (parsed ranges)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the recipe text, for reports

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return DEGRADATION_KINDS[self.kind](img, rng, **self.params).astype(np.float32, copy=False)

    def __str__(self) -> str:
        return self.source or self.kind


def build_degradation(
    spec: dict | str | None, *, base_dir: str | Path | None = None, load: bool = True
) -> Degradation:
    """Parse a recipe's ``degradation:`` entry (a mapping with ``kind``, or just the kind's name).

    ``preset: paper|reference`` (noise, blur, jpeg) picks the paper's or the reference code's ranges;
    ``kernels: PATH`` (motion) loads real kernels from a MATLAB file, relative to ``base_dir``
    (``load=False`` only validates the spec and leaves the path unread).
    """
    if spec is None:
        spec = {"kind": "identity"}
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ConfigError(
            f"a degradation needs a 'kind' (one of {', '.join(DEGRADATION_KINDS)}), got {spec!r}"
        )
    kind = spec["kind"]
    if kind not in DEGRADATION_KINDS:
        raise ConfigError(f"unknown degradation kind {kind!r}; choose from {', '.join(DEGRADATION_KINDS)}")
    options = _options(kind)
    allowed = set(options) | ({"preset"} if kind in deg.PRESETS["paper"] else set())
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
        elif key == "kernels":
            if not isinstance(value, str | Path):
                raise ConfigError(f"{name}: expected a path to a .mat file, got {value!r}")
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            params[key] = load_levin_kernels(path) if load else path
        else:
            r = deg.parse_range(value, name)
            lo = min(r.values) if isinstance(r, deg.Choice) else r[0] if isinstance(r, tuple) else r
            if lo < 0 and key != "angle":  # the rain angle is signed; everything else is a size or level
                raise ConfigError(f"{name}: values must be >= 0, got {value!r}")
            params[key] = r
    text = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("kind", "kernels"))
    if "kernels" in spec:
        text = ", ".join(filter(None, [text, f"kernels={Path(spec['kernels']).name}"]))
    return Degradation(kind, params, f"{kind}({text})" if text else kind)


def degradation_options() -> dict[str, dict[str, Any]]:
    """Every kind with its settable keys and default ranges (for the docs and ``--help``)."""
    return {k: _options(k) for k in DEGRADATION_KINDS}
