"""Evaluate restoration models and baselines on test sets, under both metric protocols.

A **task** is one test set with one degradation:

* ``paired``: degraded inputs and targets paired by name with :func:`ramir.data.folders.pair_folders`
  (``DIR/input`` + ``DIR/target``, RESIDE's ``hazy``/``clear``, GoPro's ``<scene>/blur``/``sharp``, LOL's
  ``low``/``high``; the layout is detected or named; a suite file may name the two sub-folders);
* ``clean``: a folder of clean images, degraded here, deterministically: every image gets its own seed
  derived from the task seed and its file name (:func:`image_seed`), so ``--max-images`` and the
  order of files never change an image's degradation. A clean task's ``base`` (a degradation spec, e.g.
  ``{kind: zoom, scale: 3}``) is applied to the photo first and its result is the target.

Degradations of clean images: the paper's test settings (``noise`` sigma 15/25/50 on 0-255, ``blur``
sigma 2.0 with a 15x15 kernel, ``jpeg`` quality 50; :func:`ramir.data.degradations.degrade_for_test`),
out-of-distribution noises (``poisson``, ``speckle``, ``salt_pepper``) and synthetic ``haze``, ``rain``,
``low_light`` and ``motion`` blur (:mod:`ramir.data.synthetic`; the level, when given, fixes the main
parameter: haze beta, rain density, low-light exposure, motion-blur length in pixels).

A **method** maps a degraded float image to a restored one: a model (any checkpoint
:func:`ramir.inference.load` accepts), the ``input`` baseline (the degraded image itself) or the ``nlm``
baseline (OpenCV non-local means, noise tasks only, ``h = 0.6 sigma``).

Every image is measured under both protocols of :mod:`ramir.metrics`: the **reference** protocol on the
output rounded to uint8 (what the reference saves and measures), and the **skimage** (PromptIR)
protocol on the float output clipped to [0, 1], as PromptIR measures its float tensors.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import platform
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramir import metrics
from ramir.errors import ConfigError, DataError, reject_unknown_keys
from ramir.fileio import atomic_path

METRICS = ("psnr_reference", "ssim_reference", "psnr_skimage", "ssim_skimage")


def _registry():
    from ramir.data.online import DEGRADATIONS as registry

    return registry

REFERENCE_CROP = 4
# OpenCV NLM strength per noise sigma. Mean reference PSNR on 256x256 crops of skimage's astronaut,
# chelsea and coffee at sigma 15/25/50: h = 0.4: 27.98/24.89/22.40, 0.5: 28.74/26.29/24.04,
# 0.6: 29.12/26.96/24.34, 0.8: 29.10/26.89/23.46, 1.0: 28.47/26.07/22.81 dB.
NLM_H_PER_SIGMA = 0.6

# degradation name -> what it is (shown in --help and in the report): the one registry of
# ramir.data.online, whose random draws training uses and whose fixed levels are evaluated here
DEGRADATIONS: dict[str, str] = {name: kind.help for name, kind in _registry().items()}
# paired layouts tried, in order, when a task names none (see ramir.data.folders.LAYOUTS)
AUTO_LAYOUTS = ("input_target", "sots_outdoor", "gopro", "lol_v1", "lol_v2")


# ------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskSpec:
    """One test set with one degradation."""

    name: str
    source: str  # "paired" | "clean"
    root: Path  # paired: the data set folder; clean: the folder of clean images
    layout: str | None = None  # paired: a ramir.data.folders layout
    input_dir: str | None = None  # paired: sub-folder names overriding the layout's
    target_dir: str | None = None
    degradation: str | None = None  # clean only
    level: float | None = None
    seed: int = 0
    only: Path | None = None  # a name list (configs/splits/): the task keeps these images only
    options: dict[str, Any] = field(default_factory=dict)  # clean only: further keys of the degradation
    # clean only: a degradation spec applied to the clean image first, whose result is the target (and
    # what ``degradation`` then degrades), e.g. ``{kind: zoom, scale: 3}`` for large-photo softness
    base: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.source == "paired":
            dirs = f", {self.input_dir}/ vs {self.target_dir}/" if self.input_dir else ""
            return f"paired {self.root} (layout {self.layout}{dirs})"
        level = "" if self.level is None else f" {self.level:g}"
        files = ("bank", "bank_only", "bank_exclude", "kernels")
        extra = "".join(f", {k}={Path(v).name if k in files else v}" for k, v in self.options.items())
        base = ""
        if self.base:
            keys = "".join(f" {k}={v}" for k, v in self.base.items() if k != "kind")
            base = f" after {self.base['kind']}{keys} (the target)"
        return f"clean {self.root} + {self.degradation}{level}{extra}{base} (seed {self.seed})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        d["only"] = None if self.only is None else str(self.only)
        return d


def canonical_degradation(kind: str) -> str:
    from ramir.data.online import canonical_kind

    return canonical_kind(kind)


def detect_layout(root: Path) -> str:
    """The first of :data:`AUTO_LAYOUTS` whose input and target sub-folders exist in or below ``root``."""
    from ramir.data.folders import LAYOUTS, find_groups

    for name in AUTO_LAYOUTS:
        lay = LAYOUTS[name]
        if find_groups(root, lay.inputs, lay.targets):
            return name
    raise DataError(
        f"{root}: no paired sub-folders found (input/target, hazy/clear, blur/sharp, low/high, low/normal); "
        "name them in a suite file with 'input:' and 'target:'"
    )


def _level(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"task {spec!r}: level {text!r} is not a number") from None


def make_task(
    name: str,
    source: str,
    path: str | Path,
    *,
    layout: str | None = None,
    input_dir: str | None = None,
    target_dir: str | None = None,
    degradation: str | None = None,
    level: float | None = None,
    seed: int = 0,
    only: str | Path | None = None,
    options: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> TaskSpec:
    """Validate and build a :class:`TaskSpec` (the folder must exist; a paired layout is detected).

    ``only``: a name list file (``configs/splits/``); the task keeps the images it names. ``options``:
    further keys of a clean task's degradation (validated here; a rain_transfer ``bank`` is read here).
    ``base``: a degradation spec (``{kind: zoom, scale: 3}``) that makes the target of a clean task from
    its photo; the task's degradation is then applied to that target.
    """
    from ramir.data.folders import LAYOUTS

    if not name or any(c in name for c in "/\\"):
        raise ConfigError(f"invalid task name {name!r} (no slashes)")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"task {name!r}: no such folder: {path}")
    only = None if only is None else Path(only).expanduser()
    if only is not None and not only.is_file():
        raise DataError(f"task {name!r}: no such name list: {only}")
    if source == "paired":
        if degradation is not None:
            raise ConfigError(f"task {name!r}: a paired task takes no degradation")
        if (input_dir is None) != (target_dir is None):
            raise ConfigError(f"task {name!r}: give both 'input' and 'target' sub-folder names, or neither")
        if layout is not None and layout not in LAYOUTS:
            raise ConfigError(f"task {name!r}: unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
        if layout is None:
            layout = "input_target" if input_dir else detect_layout(path)
        if base is not None:
            raise ConfigError(f"task {name!r}: 'base' is for a clean task (a paired task has its target)")
        return TaskSpec(name, "paired", path, layout, input_dir, target_dir, seed=int(seed), only=only)
    if source == "clean":
        if degradation is None:
            raise ConfigError(f"task {name!r}: a clean task needs a degradation ({', '.join(DEGRADATIONS)})")
        kind = canonical_degradation(degradation)
        if kind in ("noise", "poisson", "speckle", "salt_pepper") and level is None:
            raise ConfigError(f"task {name!r}: {kind} needs a level, e.g. {name}=clean:{path}:{kind}:25")
        lvl = None if level is None else float(level)
        opts = dict(options or {})
        from ramir.data.online import build_degradation

        try:
            build_degradation({"kind": kind, **opts})  # unknown keys, ranges, required files (a bank)
            if base is not None:
                if not isinstance(base, dict) or "kind" not in base:
                    raise ConfigError("'base' is a degradation spec with a kind, e.g. {kind: zoom, scale: 3}")
                base = {**base, "kind": canonical_degradation(str(base["kind"]))}
                build_degradation(base)
        except ConfigError as exc:
            raise ConfigError(f"task {name!r}: {exc}") from None
        return TaskSpec(
            name, "clean", path, degradation=kind, level=lvl, seed=int(seed), only=only, options=opts,
            base=None if base is None else dict(base),
        )
    raise ConfigError(f"task {name!r}: source must be 'paired' or 'clean', got {source!r}")


def parse_task(text: str, seed: int = 0) -> TaskSpec:
    """``NAME=paired:DIR[:LAYOUT]`` or ``NAME=clean:DIR:DEGRADATION[:LEVEL]`` (``ramir evaluate --help``)."""
    from ramir.data.folders import LAYOUTS

    name, sep, rest = text.partition("=")
    source, sep2, body = rest.partition(":")
    if not sep or not sep2 or not body:
        raise ConfigError(f"task {text!r}: expected NAME=paired:DIR or NAME=clean:DIR:DEGRADATION[:LEVEL]")
    # folders may contain ':', so optional parts are split off from the right
    name, source = name.strip(), source.strip().lower()
    if source == "paired":
        folder, _, last = body.rpartition(":")
        if folder and last in LAYOUTS:
            return make_task(name, "paired", folder, layout=last, seed=seed)
        return make_task(name, "paired", body, seed=seed)
    if source != "clean":
        raise ConfigError(f"task {text!r}: source must be 'paired' or 'clean', got {source!r}")
    parts = body.rsplit(":", 2)
    level: float | None = None
    if len(parts) == 3 and _is_number(parts[2]):
        folder, kind, level = parts[0], parts[1], _level(parts[2], text)
    else:
        folder, _, kind = body.rpartition(":")
        if not folder:
            raise ConfigError(f"task {text!r}: expected NAME=clean:DIR:DEGRADATION[:LEVEL]")
    return make_task(name, "clean", folder, degradation=kind, level=level, seed=seed)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class Suite:
    """What a suite file holds: tasks, and optionally models, baselines and settings."""

    tasks: list[TaskSpec] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    seed: int | None = None
    max_images: int | None = None


_SUITE_KEYS = {"tasks", "models", "baselines", "seed", "max_images", "data_root"}
_TASK_KEYS = {
    "paired", "clean", "layout", "input", "target", "degradation", "level", "seed", "only", "options",
    "base",
}


def load_suite(path: str | Path, seed: int | None = None, data_root: str | Path | None = None) -> Suite:
    """Read a YAML suite (format in ``ramir evaluate --help``); relative paths are relative to the file.

    ``seed`` (the command line's) overrides the file's top-level seed; a task's own seed wins over both.
    The tasks' data folders (``clean:``, ``paired:``) resolve against ``data_root`` (the command line's
    ``--data-root``), else the file's own ``data_root:`` (relative to the file), else the file's folder:
    one suite serves wherever the data sit. Name lists (``only:``) stay relative to the file.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no such suite file: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping with a 'tasks' key")
    reject_unknown_keys(data, _SUITE_KEYS, str(path))
    base = path.parent
    if data_root is not None:
        data_base = Path(data_root).expanduser()
        if not data_base.is_dir():
            raise ConfigError(f"--data-root {data_base}: no such folder")
    elif data.get("data_root") is not None:
        data_base = base / str(data["data_root"])
    else:
        data_base = base
    suite = Suite(seed=data.get("seed"), max_images=data.get("max_images"))
    top_seed = seed if seed is not None else (suite.seed or 0)
    tasks = data.get("tasks") or {}
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"{path}: 'tasks' must be a non-empty mapping of task name -> settings")
    for name, t in tasks.items():
        if not isinstance(t, dict):
            raise ConfigError(f"{path}: task {name!r} must be a mapping")
        reject_unknown_keys(t, _TASK_KEYS, f"{path}: task {name!r}")
        task_seed = int(t.get("seed", top_seed))
        only = None if t.get("only") is None else base / str(t["only"])
        level = t.get("level")
        options = t.get("options") or {}
        if not isinstance(options, dict) or ("options" in t and "clean" not in t):
            raise ConfigError(f"{path}: task {name!r}: 'options' is a mapping, for a clean task")
        options = dict(options)
        for key in ("bank", "kernels"):  # a data folder or file: beside the other data
            if isinstance(options.get(key), str):
                options[key] = str(data_base / options[key])
        for key in ("bank_only", "bank_exclude"):  # name lists stay relative to the file, as 'only'
            if isinstance(options.get(key), str):
                options[key] = str(base / options[key])
        if "clean" in t:
            suite.tasks.append(
                make_task(
                    str(name),
                    "clean",
                    data_base / str(t["clean"]),
                    degradation=t.get("degradation"),
                    level=None if level is None else float(level),
                    seed=task_seed,
                    only=only,
                    options=options,
                    base=t.get("base"),
                )
            )
        elif "paired" in t:
            suite.tasks.append(
                make_task(
                    str(name),
                    "paired",
                    data_base / str(t["paired"]),
                    layout=t.get("layout"),
                    input_dir=None if t.get("input") is None else str(t["input"]),
                    target_dir=None if t.get("target") is None else str(t["target"]),
                    seed=task_seed,
                    only=only,
                    base=t.get("base"),
                )
            )
        else:
            raise ConfigError(f"{path}: task {name!r} needs 'clean: DIR' or 'paired: DIR'")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: 'models' must be a mapping of label -> checkpoint path")
    for label, ckpt in models.items():
        p = Path(str(ckpt)).expanduser()
        suite.models[str(label)] = str(p if p.is_absolute() or not (base / p).exists() else base / p)
    baselines = data.get("baselines") or []
    if not isinstance(baselines, list):
        raise ConfigError(f"{path}: 'baselines' must be a list, e.g. [input, nlm]")
    suite.baselines = [str(b) for b in baselines]
    return suite


# ------------------------------------------------------------------------------------------ images
def image_seed(seed: int, name: str) -> int:
    """The degradation seed of one image: stable across runs, file order and ``--max-images``."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**32)


def degrade(
    clean01: np.ndarray, kind: str, level: float | None, seed: int, options: dict | None = None
) -> np.ndarray:
    """A deterministic degradation of a float32 RGB [0, 1] image (see the module docstring)."""
    from ramir.data.online import degrade_at_level

    return degrade_at_level(clean01, kind, level, seed, options)


@dataclass
class Sample:
    name: str  # unique within the task: the file stem, prefixed by its scene folder for grouped sets
    lq: np.ndarray  # float32 RGB [0, 1], what the methods get
    gt_u8: np.ndarray  # uint8 RGB, the reference


def task_files(task: TaskSpec) -> list[tuple[str, Path, Path | None]]:
    """(image name, input file, target file or None) of a task, in a stable order.

    Paired sets are matched by :func:`ramir.data.folders.pair_folders`; an input without a target is an
    error (an evaluation must not quietly skip images), a target without an input is ignored.
    """
    from ramir.data.folders import filter_by_names, list_images, names, pair_folders, read_name_list

    only = None if task.only is None else read_name_list(task.only)
    if task.source == "clean":
        files = filter_by_names(list_images(task.root, recursive=False), only=only)
        if not files:
            where = " on its list" if only else ""
            raise DataError(f"task {task.name!r}: no images in {task.root}{where}")
        return [(p.stem, p, None) for p in files]
    pairing = pair_folders(task.root, task.layout, input_dir=task.input_dir, target_dir=task.target_dir)
    if pairing.unmatched_inputs:
        raise DataError(
            f"task {task.name!r}: {len(pairing.unmatched_inputs)} input(s) have no target "
            f"({names(pairing.unmatched_inputs)}); layout {task.layout!r} matches them by name"
        )
    out = []
    kept = None if only is None else set(filter_by_names([i for i, _ in pairing.pairs], only=only))
    for inp, tgt in sorted(pairing.pairs):
        if kept is not None and inp not in kept:
            continue
        group = inp.parent.parent
        prefix = "" if group == task.root else group.relative_to(task.root).as_posix().replace("/", "_") + "_"
        out.append((prefix + inp.stem, inp, tgt))
    return out


def iter_samples(task: TaskSpec, max_images: int | None = None) -> Iterator[Sample]:
    """The (degraded, target) pairs of a task, in file-name order."""
    from ramir.data.folders import read_rgb_float

    files = task_files(task)
    if max_images is not None:
        files = files[: max(0, int(max_images))]
    for name, inp, tgt in files:
        if tgt is not None:
            lq = read_rgb_float(inp)
            gt_u8 = metrics.quantize_u8(read_rgb_float(tgt))
            if lq.shape != gt_u8.shape:
                raise DataError(
                    f"task {task.name!r}: {inp.name} is {lq.shape[1]}x{lq.shape[0]} but its target "
                    f"{tgt.name} is {gt_u8.shape[1]}x{gt_u8.shape[0]}"
                )
        else:
            photo = read_rgb_float(inp)
            if task.base:
                opts = {k: v for k, v in task.base.items() if k != "kind"}
                photo = degrade(photo, task.base["kind"], None, image_seed(task.seed, "base/" + name), opts)
            gt_u8 = metrics.quantize_u8(photo)
            clean01 = gt_u8.astype(np.float32) / np.float32(255.0)
            lq = degrade(
                clean01, task.degradation, task.level, image_seed(task.seed, name), task.options
            )
        yield Sample(name, lq, gt_u8)


# ----------------------------------------------------------------------------------------- methods
RestoreFn = Callable[[np.ndarray, TaskSpec], "np.ndarray | None"]


@dataclass
class Method:
    """Something that restores: ``fn(degraded, task)`` -> restored, or None where it does not apply."""

    label: str
    kind: str  # "model" | "input" | "nlm" | "bm3d"
    fn: RestoreFn
    info: dict[str, Any] = field(default_factory=dict)


def input_baseline() -> Method:
    return Method("input", "input", lambda lq, task: lq, {"description": "the degraded input itself"})


def nlm_denoise(lq01: np.ndarray, sigma: float) -> np.ndarray:
    """OpenCV's coloured non-local means with ``h = hColor = 0.6 sigma`` (7x7 patches, 21x21 search)."""
    import cv2

    h = NLM_H_PER_SIGMA * float(sigma)
    bgr = np.ascontiguousarray(metrics.quantize_u8(lq01)[..., ::-1])
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
    return out[..., ::-1].astype(np.float32) / np.float32(255.0)


def nlm_baseline() -> Method:
    def fn(lq: np.ndarray, task: TaskSpec) -> np.ndarray | None:
        if task.degradation != "noise" or task.level is None:
            return None  # only defined for Gaussian noise of known sigma
        return nlm_denoise(lq, task.level)

    info = {
        "description": f"OpenCV fastNlMeansDenoisingColored, h = hColor = {NLM_H_PER_SIGMA} * sigma, "
        "templateWindowSize 7, searchWindowSize 21; Gaussian-noise tasks only"
    }
    return Method("nlm", "nlm", fn, info)


BM3D_MISSING = "the bm3d baseline needs the optional 'bm3d' package: pip install 'ramir[bm3d]'"


def bm3d_denoise(lq01: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D (the ``bm3d`` package's ``bm3d_rgb``, all stages, its default profile) told the true sigma.

    The input is quantised to uint8 first, as every method here sees it; the package's colour
    transform (opponent colour space) and Wiener stage are its own defaults.
    """
    try:
        import bm3d
    except ImportError:
        raise ConfigError(BM3D_MISSING) from None
    x = metrics.quantize_u8(lq01).astype(np.float32) / np.float32(255.0)
    out = bm3d.bm3d_rgb(x, float(sigma) / 255.0)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def bm3d_baseline() -> Method:
    try:
        import bm3d  # noqa: F401  (fail before any image is read)
    except ImportError:
        raise ConfigError(BM3D_MISSING) from None

    def fn(lq: np.ndarray, task: TaskSpec) -> np.ndarray | None:
        if task.degradation != "noise" or task.level is None:
            return None  # a Gaussian denoiser of known sigma: noise tasks only
        return bm3d_denoise(lq, task.level)

    info = {
        "description": "CBM3D (bm3d.bm3d_rgb, default profile) told the true sigma; Gaussian noise only"
    }
    return Method("bm3d", "bm3d", fn, info)


BASELINES: dict[str, Callable[[], Method]] = {
    "input": input_baseline,
    "nlm": nlm_baseline,
    "bm3d": bm3d_baseline,
}


def restorer_method(label: str, restorer: Any, info: dict[str, Any] | None = None) -> Method:
    """A method from anything with ``restore(float32 HWC [0, 1]) -> float32 HWC``."""

    def fn(lq: np.ndarray, task: TaskSpec) -> np.ndarray:
        return np.asarray(restorer.restore(lq), dtype=np.float32)

    return Method(label, "model", fn, dict(info or {}))


def model_method(
    label: str, path: str, *, device: str = "auto", tile: int | str = "auto", max_memory: int | None = None,
    ensemble: int = 1,
) -> Method:
    """Load a checkpoint with :func:`ramir.inference.load` (once) and wrap it as a method."""
    from ramir.inference import load

    memory = {"max_memory": max_memory} if max_memory else {}
    restorer = load(path, device=device, tile=tile, ensemble=ensemble, **memory)
    info = {
        "path": str(path),
        "device": str(getattr(restorer, "device", device)),
        "tile": tile,
        "ensemble": ensemble,
        "name": getattr(restorer, "name", ""),
    }
    return restorer_method(label, restorer, info)


def parse_model_arg(text: str) -> tuple[str, str]:
    """``LABEL=PATH`` or ``PATH`` (label = the file stem)."""
    label, sep, path = text.partition("=")
    if sep and label and not Path(text).exists():
        return label.strip(), path.strip()
    return Path(text).stem or text, text


# -------------------------------------------------------------------------------------- evaluation
@dataclass
class EvaluationResult:
    settings: dict[str, Any]
    tasks: list[TaskSpec]
    methods: list[Method]
    rows: list[dict[str, Any]]  # one per (task, image, method)
    counts: dict[str, int]  # images per task
    crops: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # task -> [(image, PIL image)]

    def summary(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """task -> method -> mean of every metric (None where the method does not apply)."""
        out: dict[str, dict[str, dict[str, float | int | None]]] = {}
        for task in self.tasks:
            out[task.name] = {}
            for m in self.methods:
                rows = [r for r in self.rows if r["task"] == task.name and r["method"] == m.label]
                rows = [r for r in rows if r["psnr_reference"] is not None]
                entry: dict[str, float | int | None] = {"images": len(rows)}
                for key in (*METRICS, "seconds"):
                    entry[key] = float(np.mean([r[key] for r in rows])) if rows else None
                out[task.name][m.label] = entry
        return out


def measure(restored01: np.ndarray, gt_u8: np.ndarray) -> dict[str, float]:
    """Both protocols on one image: reference on the uint8-rounded output, skimage on the float output."""
    out_u8 = metrics.quantize_u8(restored01)
    out32 = np.clip(restored01, 0.0, 1.0).astype(np.float32)
    gt32 = gt_u8.astype(np.float32) / np.float32(255.0)
    return {
        "psnr_reference": metrics.psnr(out_u8, gt_u8, crop_border=REFERENCE_CROP),
        "ssim_reference": metrics.ssim(out_u8, gt_u8, crop_border=REFERENCE_CROP),
        "psnr_skimage": metrics.psnr_skimage(out32, gt32),
        "ssim_skimage": metrics.ssim_skimage(out32, gt32),
    }


def evaluate(
    tasks: Sequence[TaskSpec],
    methods: Sequence[Method],
    *,
    max_images: int | None = None,
    crops: int = 3,
    crop_size: int = 192,
    settings: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Run every method on every image of every task and measure it (see the module docstring)."""
    if not tasks:
        raise ConfigError("nothing to evaluate: give at least one --task or a --suite")
    if not methods:
        raise ConfigError("nothing to evaluate: give at least one --model or --baseline")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"method labels must be unique, got {labels}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    result = EvaluationResult(dict(settings or {}), list(tasks), list(methods), [], {})
    for task in tasks:
        started, n = time.perf_counter(), 0
        for i, sample in enumerate(iter_samples(task, max_images)):
            n += 1
            outputs: list[tuple[Method, np.ndarray | None]] = []
            for m in methods:
                t0 = time.perf_counter()
                restored = m.fn(sample.lq, task)
                seconds = time.perf_counter() - t0
                row: dict[str, Any] = {"task": task.name, "image": sample.name, "method": m.label}
                if restored is None:
                    row.update(dict.fromkeys(METRICS), seconds=None)
                else:
                    if restored.shape != sample.lq.shape:
                        raise DataError(f"{m.label} returned shape {restored.shape} for {sample.lq.shape}")
                    row.update(measure(restored, sample.gt_u8), seconds=seconds)
                result.rows.append(row)
                outputs.append((m, restored))
            if i < crops:
                result.crops.setdefault(task.name, []).append(
                    (sample.name, side_by_side(sample, outputs, result.rows[-len(methods) :], crop_size))
                )
        result.counts[task.name] = n
        if log:
            log(f"{task.name}: {n} image(s) in {time.perf_counter() - started:.1f} s")
    return result


# --------------------------------------------------------------------------------------- crops
def side_by_side(
    sample: Sample, outputs: list[tuple[Method, np.ndarray | None]], rows: list[dict[str, Any]], size: int
) -> Any:
    """input | each method | target, the same centre crop of each, labelled with the reference PSNR."""
    from PIL import Image, ImageDraw

    from ramir.data.datasets import centre_box

    y0, x0, y1, x1 = centre_box(*sample.gt_u8.shape[:2], size)
    psnr_of = {r["method"]: r["psnr_reference"] for r in rows}

    def label(text: str, method: str) -> str:
        p = psnr_of.get(method)
        return text if p is None else f"{text} {_fmt(p, 2)} dB"

    inputs = [m.label for m, _ in outputs if m.kind == "input"]
    panels = [
        (label("input", inputs[0]) if inputs else "input", metrics.quantize_u8(sample.lq[y0:y1, x0:x1]))
    ]
    for m, out in outputs:
        if out is not None and m.kind != "input":  # the input baseline is the first panel already
            panels.append((label(m.label, m.label), metrics.quantize_u8(out[y0:y1, x0:x1])))
    panels.append(("target", sample.gt_u8[y0:y1, x0:x1]))
    ph, pw, header, gap = y1 - y0, x1 - x0, 16, 4
    canvas = Image.new("RGB", (len(panels) * (pw + gap) - gap, ph + header), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (text, arr) in enumerate(panels):
        x = k * (pw + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(arr)), (x, header))
        draw.text((x + 2, 2), text[: max(4, pw // 6)], fill=(0, 0, 0))
    return canvas


# -------------------------------------------------------------------------------------- outputs
def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _fmt(x: float | None, digits: int) -> str:
    if x is None:
        return "—"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def results_dict(result: EvaluationResult) -> dict[str, Any]:
    from ramir._version import __version__

    summary = result.summary()
    return {
        "ramir_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "settings": result.settings,
        "protocols": {
            "reference": metrics.PROTOCOLS["reference"] + "; measured on the output rounded to uint8",
            "skimage": metrics.PROTOCOLS["skimage"] + "; measured on the float output clipped to [0,1] "
            "(float32) against target/255",
        },
        "metric_keys": {
            "psnr_reference": "PSNR dB, reference protocol",
            "ssim_reference": "SSIM, reference protocol",
            "psnr_skimage": "PSNR dB, skimage protocol",
            "ssim_skimage": "SSIM, skimage protocol",
        },
        "degraded_image_seed": "per image: (task seed * 1000003 + crc32(file stem)) mod 2**32",
        "tasks": [{**t.to_dict(), "images": result.counts.get(t.name, 0)} for t in result.tasks],
        "methods": [{"label": m.label, "kind": m.kind, **m.info} for m in result.methods],
        "summary": {
            t: {
                m: {k: (_finite(v) if isinstance(v, float) else v) for k, v in e.items()}
                for m, e in per.items()
            }
            for t, per in summary.items()
        },
        "per_image": [
            {k: (_finite(v) if isinstance(v, float) else v) for k, v in r.items()} for r in result.rows
        ],
    }


def per_image_csv(result: EvaluationResult) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["task", "image", "method", *METRICS, "seconds"], lineterminator="\n"
    )
    writer.writeheader()
    for r in result.rows:
        writer.writerow(
            {k: ("" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)) for k, v in r.items()}
        )
    return buf.getvalue()


def _averaged(task: TaskSpec) -> bool:
    """Clean-photo tasks (degradation ``none``) are reported but not averaged: their input is infinite."""
    return not (task.source == "clean" and task.degradation == "none")


def _table(result: EvaluationResult, summary: dict, psnr_key: str, ssim_key: str) -> list[str]:
    head = "| method | " + " | ".join(t.name for t in result.tasks) + " | average |"
    lines = [head, "|---" * (len(result.tasks) + 2) + "|"]
    averaged = [t for t in result.tasks if _averaged(t)]
    for m in result.methods:
        cells, ps, ss = [], [], []
        for t in result.tasks:
            e = summary[t.name][m.label]
            if e[psnr_key] is None:
                cells.append("—")
                continue
            cells.append(f"{_fmt(e[psnr_key], 2)} / {_fmt(e[ssim_key], 4)}")
            if _averaged(t):
                ps.append(e[psnr_key])
                ss.append(e[ssim_key])
        avg = (
            f"{_fmt(float(np.mean(ps)), 2)} / {_fmt(float(np.mean(ss)), 4)}"
            if averaged and len(ps) == len(averaged)
            else "—"
        )
        lines.append(f"| {m.label} | " + " | ".join(cells) + f" | {avg} |")
    return lines


def report_markdown(result: EvaluationResult) -> str:
    from ramir._version import __version__

    s = result.settings
    summary = result.summary()
    lines = [
        "# ramir evaluation",
        "",
        f"ramir {__version__}; device {s.get('device', '?')}; tile {s.get('tile', '?')}; "
        f"max images per task: {s.get('max_images') or 'all'}. Cells are PSNR (dB) / SSIM, averaged over "
        "the images of the task; — where a method does not apply (the average then needs every task); "
        "clean-photo tasks (degradation none) are not averaged.",
        "",
        "## Reference protocol (RAM / BasicSR, the paper's tables)",
        "",
        metrics.PROTOCOLS["reference"] + "; on the output rounded to uint8.",
        "",
        *_table(result, summary, "psnr_reference", "ssim_reference"),
        "",
        "## PromptIR protocol (scikit-image)",
        "",
        metrics.PROTOCOLS["skimage"] + "; on the float output clipped to [0,1].",
        "",
        *_table(result, summary, "psnr_skimage", "ssim_skimage"),
        "",
        "## Tasks",
        "",
        "| task | images | source |",
        "|---|---|---|",
        *[f"| {t.name} | {result.counts.get(t.name, 0)} | {t.describe()} |" for t in result.tasks],
        "",
        "Degraded images of clean tasks use a per-image seed derived from the task seed and the file name.",
        "",
        "## Methods",
        "",
        "| method | kind | details | seconds / image |",
        "|---|---|---|---|",
    ]
    for m in result.methods:
        details = m.info.get("path") or m.info.get("description", "")
        secs = [summary[t.name][m.label]["seconds"] for t in result.tasks]
        secs = [x for x in secs if x is not None]
        lines.append(
            f"| {m.label} | {m.kind} | {details} | {_fmt(float(np.mean(secs)) if secs else None, 3)} |"
        )
    if result.crops:
        lines += [
            "",
            "## Crops",
            "",
            "Centre crops: degraded input | each model or baseline (reference PSNR) | target.",
            "",
        ]
        for task, items in result.crops.items():
            for image, _ in items:
                lines.append(f"![{task} {image}](crops/{task}/{image}.png)")
    return "\n".join(lines) + "\n"


def check_output_dir(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace an earlier run's results unless asked to."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if not overwrite and any((out / n).exists() for n in ("results.json", "report.md")):
        raise ConfigError(f"{out} already holds results; choose another --out or pass --overwrite")


def write_outputs(
    result: EvaluationResult, out_dir: str | Path, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``crops/``, ``per_image.csv``, ``results.json`` and ``report.md`` (each file atomically)."""
    out = Path(out_dir)
    check_output_dir(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for task, items in result.crops.items():
        for image, canvas in items:
            target = out / "crops" / task / f"{image}.png"
            with atomic_path(target) as tmp:
                canvas.save(tmp, format="PNG")
    files = {
        "per_image.csv": per_image_csv(result),
        "results.json": json.dumps(results_dict(result), indent=2, allow_nan=False) + "\n",
        "report.md": report_markdown(result),  # last: its presence means the run completed
    }
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written[name] = out / name
    return written
