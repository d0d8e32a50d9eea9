"""Motion-blur kernels: random camera-shake trajectories and the real kernels of Levin et al. (CVPR 2009).

A kernel is a float32 (k, k) array, k odd, non-negative, summing to 1, applied by true convolution
(:func:`apply_kernel`) with reflect-101 borders.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ramir.errors import DataError


def normalize_kernel(kernel: np.ndarray) -> np.ndarray:
    """Clip negatives, divide by the sum, pad to odd square size so that the centre is a pixel."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
    total = k.sum()
    if k.ndim != 2 or total <= 0:
        raise DataError(f"a blur kernel must be a 2-D array with a positive sum, got shape {k.shape}")
    h, w = k.shape
    size = max(h, w) | 1  # odd
    top, left = (size - h) // 2, (size - w) // 2
    k = np.pad(k, ((top, size - h - top), (left, size - w - left)))
    return (k / total).astype(np.float32)


def apply_kernel(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with ``kernel`` (float result, reflect-101 borders, as the blur degradation)."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # filter2D correlates; flipping makes it a convolution
    out = cv2.filter2D(np.asarray(img, dtype=np.float32), -1, flipped, borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(np.shape(img)).astype(np.float32)


def trajectory_kernel(
    rng: np.random.Generator,
    length: float = 15.0,
    *,
    steps: int = 96,
    inertia: float = 0.7,
    shake: float = 0.6,
) -> np.ndarray:
    """A random camera-shake kernel of path length about ``length`` pixels.

    The camera moves with a velocity that keeps a fraction ``inertia`` of a random initial direction and
    drifts by an integrated random walk of relative size ``shake`` (loosely after Boracchi & Foi 2012).
    Positions are taken at equal time steps and splatted bilinearly, so slow parts of the path weigh
    more, as the exposure spends longer there.
    """
    theta = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(theta), math.sin(theta)])
    walk = np.cumsum(rng.normal(0.0, 1.0, (steps, 2)), axis=0) / math.sqrt(steps)
    jerk = np.cumsum(rng.normal(0.0, 1.0, (steps, 2)), axis=0) / steps * 4.0  # short-term tremor
    velocity = inertia * direction + shake * walk + 0.25 * shake * jerk
    path = np.cumsum(velocity, axis=0)
    arc = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
    path = path * (float(length) / max(arc, 1e-8))
    path -= (path.max(axis=0) + path.min(axis=0)) / 2  # centre the bounding box on the kernel centre
    extent = np.abs(path).max()
    half = math.ceil(extent) + 1
    size = 2 * half + 1
    xy = path + half
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    kernel = np.zeros((size, size), dtype=np.float64)
    for dx, dy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return normalize_kernel(kernel)


def generalized_gaussian_kernel(
    sigma_x: float, sigma_y: float, angle_deg: float = 0.0, beta: float = 2.0, size: int | None = None
) -> np.ndarray:
    """An oriented (anisotropic) blur ``exp(-(r^T S^-1 r)^(beta/2))``: ``beta`` 2 is a Gaussian, below 2
    a heavy-tailed kernel, above 2 a plateau (the generalised shapes of Real-ESRGAN's blur model)."""
    s_max = max(sigma_x, sigma_y, 0.2)
    half = math.ceil(3.5 * s_max) if size is None else size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    t = math.radians(angle_deg)
    u = math.cos(t) * xx + math.sin(t) * yy
    v = -math.sin(t) * xx + math.cos(t) * yy
    q = (u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2
    return normalize_kernel(np.exp(-0.5 * q ** (beta / 2.0)))


def defocus_kernel(radius: float) -> np.ndarray:
    """A uniform disc of ``radius`` px with anti-aliased rim (out-of-focus blur of a circular aperture)."""
    half = math.ceil(radius) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r = np.hypot(xx, yy)
    return normalize_kernel(np.clip(radius + 0.5 - r, 0.0, 1.0))


def shake_trajectory_kernel(
    rng: np.random.Generator,
    max_length: float = 30.0,
    exposure: float = 1.0,
    *,
    steps: int = 2000,
) -> np.ndarray:
    """Camera shake after the trajectory model of Boracchi & Foi (2012), a second model unlike
    :func:`trajectory_kernel`: a unit-speed path whose direction takes Gaussian jitter, a centripetal
    pull back towards the start, and rare abrupt reversals (their ``anxiety``, ``centripetal``,
    ``gaussian_shake``, ``prob_big_shake`` drawn at random); the kernel integrates the first
    ``exposure`` fraction of the path.
    """
    anxiety = 0.1 * rng.random()
    centripetal = 0.7 * rng.random()
    big_shake = 0.2 * rng.random()
    gaussian_shake = 10.0 * rng.random()
    theta = 2 * math.pi * rng.random()
    speed = float(max_length) / (steps - 1)
    v0 = complex(math.cos(theta), math.sin(theta))
    v = v0 * (anxiety if anxiety > 0 else speed)
    pos = np.zeros(steps, dtype=np.complex128)
    u = rng.random(steps)
    turn = rng.random(steps)
    jitter = rng.normal(size=(steps, 2))
    for t in range(steps - 1):
        kick = 2 * v * np.exp(1j * (math.pi + (turn[t] - 0.5))) if u[t] < big_shake * anxiety else 0.0
        dv = kick + anxiety * (gaussian_shake * complex(*jitter[t]) - centripetal * pos[t]) * speed
        v = v + dv
        v = v / max(abs(v), 1e-12) * speed
        pos[t + 1] = pos[t] + v
    n = max(2, round(float(np.clip(exposure, 0.01, 1.0)) * steps))
    path = np.stack([pos[:n].real, pos[:n].imag], axis=1)
    path -= (path.max(axis=0) + path.min(axis=0)) / 2
    half = math.ceil(np.abs(path).max()) + 1
    size = 2 * half + 1
    xy = path + half
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    kernel = np.zeros((size, size), dtype=np.float64)
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    for dx, dy, w in corners:
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return normalize_kernel(kernel)


def augment_kernel(kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 8 rotations/flips of ``kernel``: 8 real Levin kernels become 64."""
    k = np.rot90(kernel, int(rng.integers(4)))
    if rng.random() < 0.5:
        k = k[:, ::-1]
    return np.ascontiguousarray(k)


def load_levin_kernels(path: str | Path, variable: str = "kernels") -> list[np.ndarray]:
    """Read blur kernels from a MATLAB file (v7.3/HDF5 through h5py; older versions through scipy).

    The MATLAB variable may be a cell array of 2-D kernels (Levin09.mat: 8 kernels, 13..27 px) or a
    numeric 3-D array. MATLAB stores arrays column-major, so HDF5 datasets are transposed back.
    Every kernel is normalised to sum 1 and padded to an odd square.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"kernel file not found: {path}")
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if variable not in f:
                raise DataError(f"{path}: no variable {variable!r} (found: {', '.join(sorted(f))})")
            ds = f[variable]
            if ds.dtype.kind == "O":  # cell array: an array of object references
                raw = [np.asarray(f[ref]).T for ref in np.asarray(ds).T.ravel()]
            else:  # numeric array stored as (n, w, h) for MATLAB's (h, w, n)
                arr = np.asarray(ds)
                raw = [arr.T] if arr.ndim == 2 else [a.T for a in arr]
    else:
        try:
            from scipy.io import loadmat
        except ImportError as exc:  # pragma: no cover - scipy comes with scikit-image
            raise DataError(f"{path}: not an HDF5 (v7.3) .mat file and scipy is unavailable") from exc
        try:
            mat = loadmat(str(path))
        except Exception as exc:
            raise DataError(f"{path}: cannot read as a MATLAB file ({exc})") from exc
        if variable not in mat:
            raise DataError(f"{path}: no variable {variable!r}")
        obj = mat[variable]
        if obj.dtype == object:
            raw = [np.asarray(k) for k in obj.T.ravel()]
        else:
            raw = [obj] if obj.ndim == 2 else [obj[..., i] for i in range(obj.shape[-1])]
    kernels = [normalize_kernel(k) for k in raw if np.asarray(k).ndim == 2 and np.asarray(k).size > 1]
    if not kernels:
        raise DataError(f"{path}: variable {variable!r} holds no 2-D kernels")
    return kernels
