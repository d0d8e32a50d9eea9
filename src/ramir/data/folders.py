"""Image folders and the paired layouts of RAM's datasets: listing, reading and name matching.

A paired layout names the sub-folder of degraded inputs, the sub-folder of clean targets and how an
input's file name finds its target (:data:`LAYOUTS`). Pairs are looked for in the root and, when the
root holds no such sub-folders, in the directories below it (up to three levels): GoPro keeps one
``blur``/``sharp`` pair of folders per scene, LOL-v2 one ``Low``/``Normal`` pair per subset.
Sub-folder names are matched case-insensitively.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ramir.errors import DataError, ImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (hidden files skipped), sorted by path for a stable order."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    files = [
        p
        for p in pattern
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(files)


def read_rgb_float(path: str | Path) -> np.ndarray:
    """A dataset image as HWC float32 **RGB** in [0, 1] (grey is repeated, alpha dropped, 16-bit kept),
    decoded by OpenCV as the reference's loader does: what training, MAC and evaluation read. A user's
    photo to restore is read by :func:`ramir.imageio.read_image` instead, which keeps its alpha, bit
    depth, ICC profile and metadata for writing the result back."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    # IMREAD_COLOR as the reference's loader (3 channels, EXIF orientation applied); ANYDEPTH keeps 16 bits
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise ImageError(f"cannot decode {path}: not an image or truncated")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img, dtype=np.float32) / np.float32(scale)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header (Pillow reads no pixels), decoding only as a fallback."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:
        return read_rgb_float(path).shape[:2]


# ----------------------------------------------------------------------------------- name matching
_ROLE_PREFIX = re.compile(
    r"^(?:no)?rain[-_]?(?=\d)|^(?:low|normal|high|hazy|clear|blur|sharp|gt|lq)[-_]?(?=\d)"
)


def stem_key(path: Path) -> str:
    """The file stem, lower-case, without a role prefix before a number.

    ``rain-001``/``norain-001`` (Rain100L, Rain12) and ``low00001``/``normal00001`` (LOL-v2 Real)
    both become ``001``/``00001``; ``r000da3d7t`` (LOL-v2 Synthetic) stays as it is.
    """
    return _ROLE_PREFIX.sub("", path.stem.lower())


def read_name_list(path: str | Path) -> frozenset[str]:
    """The image names of a split file: one per line, ``#`` starts a comment; compared by :func:`stem_key`.

    Split files (``configs/splits/``) are how a validation set is held out of the training sources:
    a training source ``exclude``s the names, the validation suite keeps ``only`` them.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the name list {path}: {exc.strerror or exc}") from None
    found = {stem_key(Path(line.split("#", 1)[0].strip())) for line in lines}
    found.discard("")
    if not found:
        raise DataError(f"the name list {path} names no image")
    return frozenset(found)


def filter_by_names(
    paths: Iterable[Path], *, only: frozenset[str] | None = None, exclude: frozenset[str] | None = None
) -> list[Path]:
    """``paths`` whose :func:`stem_key` is in ``only`` (when given) and not in ``exclude``."""
    return [
        p
        for p in paths
        if (only is None or stem_key(p) in only) and (exclude is None or stem_key(p) not in exclude)
    ]


def id_prefix_key(path: Path) -> str:
    """RESIDE names: the hazy ``0025_0.8_0.2.jpg`` (id, airlight, beta) matches the clear ``0025.png``."""
    return path.stem.split("_")[0].lower()


@dataclass(frozen=True)
class Layout:
    """A paired-folder convention: candidate input/target sub-folder names and a pairing key."""

    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    key: Callable[[Path], str]
    task: str
    description: str


LAYOUTS: dict[str, Layout] = {
    "input_target": Layout(
        ("input",),
        ("target",),
        stem_key,
        "paired",
        "ROOT/input + ROOT/target, matched by stem (role prefixes rain-/norain-, low/normal ignored)",
    ),
    "rain13k": Layout(
        ("input",),
        ("target",),
        stem_key,
        "rain",
        "Rain13k train and its tests (Rain100L/H, Test100/1200/2800): ROOT[/SET]/input + target, by stem",
    ),
    "reside_ots": Layout(
        ("hazy", "haze", "input"),
        ("clear", "gt", "target"),
        id_prefix_key,
        "haze",
        "RESIDE OTS: ROOT/hazy (0025_0.8_0.2.jpg) + ROOT/clear (0025.jpg), matched by the id before '_'",
    ),
    "sots_outdoor": Layout(
        ("hazy", "haze", "input"),
        ("clear", "gt", "target"),
        id_prefix_key,
        "haze",
        "SOTS-outdoor: ROOT/hazy + ROOT/clear (or input/target), matched by the id before '_'",
    ),
    "gopro": Layout(
        ("blur",),
        ("sharp",),
        stem_key,
        "motion",
        "GoPro: ROOT/<scene>/blur + ROOT/<scene>/sharp, matched by stem within each scene",
    ),
    "lol_v2": Layout(
        ("low",),
        ("normal",),
        stem_key,
        "lowlight",
        "LOL-v2 Real/Synthetic: ROOT[/SUBSET]/Low + Normal; low00001 matches normal00001, equal names match",
    ),
    "lol_v1": Layout(
        ("low",),
        ("high",),
        stem_key,
        "lowlight",
        "LOL v1 (e.g. eval15): ROOT/low + ROOT/high, matched by stem",
    ),
}


def _subdir(folder: Path, candidates: Iterable[str]) -> Path | None:
    """The first child of ``folder`` named like one of ``candidates`` (case-insensitive)."""
    try:
        children = {c.name.lower(): c for c in sorted(folder.iterdir()) if c.is_dir()}
    except OSError:
        return None
    for name in candidates:
        if name.lower() in children:
            return children[name.lower()]
    return None


def find_groups(
    root: Path, inputs: tuple[str, ...], targets: tuple[str, ...], max_depth: int = 3
) -> list[tuple[Path, Path, Path]]:
    """(group, input folder, target folder) for the root or, failing that, every folder below it
    (breadth-first, at most ``max_depth`` levels) that holds both sub-folders."""
    found: list[tuple[Path, Path, Path]] = []
    level = [root]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for folder in level:
            i, t = _subdir(folder, inputs), _subdir(folder, targets)
            if i is not None and t is not None:
                found.append((folder, i, t))
            else:
                with contextlib.suppress(OSError):
                    nxt.extend(
                        sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
                    )
        if found:
            return found
        level = nxt
    return found


@dataclass
class Pairing:
    """The outcome of matching an input folder with a target folder (or several groups of them)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unmatched_inputs: list[Path] = field(default_factory=list)
    unmatched_targets: list[Path] = field(default_factory=list)
    ambiguous_targets: list[Path] = field(default_factory=list)
    groups: list[Path] = field(default_factory=list)
    n_inputs: int = 0
    n_targets: int = 0

    def extend(self, other: Pairing) -> None:
        """Add the outcome of another root (a source may list several)."""
        self.pairs += other.pairs
        self.unmatched_inputs += other.unmatched_inputs
        self.unmatched_targets += other.unmatched_targets
        self.ambiguous_targets += other.ambiguous_targets
        self.groups += other.groups
        self.n_inputs += other.n_inputs
        self.n_targets += other.n_targets

    def problems(self) -> list[str]:
        out = []
        if self.unmatched_inputs:
            out.append(
                f"{len(self.unmatched_inputs)} inputs without a target: {names(self.unmatched_inputs)}"
            )
        if self.unmatched_targets:
            out.append(
                f"{len(self.unmatched_targets)} targets without an input: {names(self.unmatched_targets)}"
            )
        if self.ambiguous_targets:
            out.append(
                f"{len(self.ambiguous_targets)} targets share a name key with another target "
                f"(first one used): {names(self.ambiguous_targets)}"
            )
        return out

    def summary(self) -> str:
        return (
            f"{len(self.pairs)} pairs from {self.n_inputs} inputs and {self.n_targets} targets"
            f" in {len(self.groups)} folder pair(s)"
        )


def names(paths: list[Path], limit: int = 5) -> str:
    """``a.png, b.png, ... and 12 more`` (parent folder kept, enough to find the file)."""
    shown = [f"{p.parent.name}/{p.name}" for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def pair_folders(
    root: str | Path,
    layout: str | Layout,
    *,
    input_dir: str | None = None,
    target_dir: str | None = None,
) -> Pairing:
    """Match inputs to targets under ``root``; many inputs may share one target (RESIDE's 35 hazy
    versions per clear image). Raises :class:`DataError` when the folders are missing or empty."""
    root = Path(root)
    lay = LAYOUTS[layout] if isinstance(layout, str) else layout
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    in_names = (input_dir,) if input_dir else lay.inputs
    tgt_names = (target_dir,) if target_dir else lay.targets
    groups = find_groups(root, in_names, tgt_names)
    if not groups:
        raise DataError(
            f"{root}: no '{'|'.join(in_names)}' and '{'|'.join(tgt_names)}' sub-folders here or below"
        )
    result = Pairing(groups=[g for g, _, _ in groups])
    for _, in_dir, tgt_dir in groups:
        inputs, targets = list_images(in_dir), list_images(tgt_dir)
        result.n_inputs += len(inputs)
        result.n_targets += len(targets)
        by_key: dict[str, Path] = {}
        for t in targets:
            k = lay.key(t)
            if k in by_key:
                result.ambiguous_targets.append(t)
            else:
                by_key[k] = t
        used: set[str] = set()
        for i in inputs:
            k = lay.key(i)
            if k in by_key:
                result.pairs.append((i, by_key[k]))
                used.add(k)
            else:
                result.unmatched_inputs.append(i)
        result.unmatched_targets.extend(t for k, t in by_key.items() if k not in used)
    if result.n_inputs == 0 and result.n_targets == 0:
        raise DataError(f"{root}: the input and target folders hold no images")
    if not result.pairs:
        hint = f"e.g. input {result.unmatched_inputs[0].name!r}" if result.unmatched_inputs else "no inputs"
        raise DataError(
            f"{root}: no input matches a target "
            f"({result.n_inputs} inputs, {result.n_targets} targets; {hint})"
        )
    return result


def warn_unmatched(pairing: Pairing, what: str) -> None:
    """One warning listing what did not pair, when some pairs did."""
    problems = pairing.problems()
    if problems:
        warnings.warn(f"{what}: {'; '.join(problems)}", stacklevel=3)
