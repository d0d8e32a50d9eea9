"""The ``data:`` section of a recipe: parsing, building datasets, verifying folders, MAC images.

.. code-block:: yaml

    data:
      train:
        patch_size: 64            # random square patches
        samples_per_epoch: 10000  # virtual epoch length of the mixture
        flip: true                # horizontal flips (the reference's augmentation); vflip, rot90: off
        context: 0                # px of real image around each patch, degraded with it and cut off
        small_images: pad         # images smaller than the patch: reflect-pad (pad) or drop (skip)
        sources:
          - {name: noise, type: clean, root: BSDS432, degradation: {kind: noise, sigma: [0, 50]}, weight: 1}
          - {name: rain, type: paired, layout: rain13k, root: Rain100H_1-70}
      val:
        size: 128                 # centre crop; null = whole images
        max_images: 8             # per source
        sources: [...]

Keys a source may have: :data:`SOURCE_KEYS`; unknown keys anywhere raise :class:`ConfigError`.
``exclude: FILE`` / ``only: FILE`` name lists (``configs/splits/``) hold a validation split out of a
training source, or restrict a source to it.
Without ``type`` a source is paired when it names a paired layout, else clean. ``root`` may be a list
of folders read as one source (LOL-v2 ``Real_captured/Train`` and ``Synthetic/Train``, as in RAM).
Relative roots (and kernel files) resolve against ``base_dir``, the recipe file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ramir.data.datasets import (
    SMALL_IMAGE_POLICIES,
    CleanSource,
    PairedSource,
    PatchOptions,
    PatchSampler,
    Source,
    ValidationDataset,
    drop_small,
    fixed_item,
)
from ramir.data.folders import (
    LAYOUTS,
    Pairing,
    filter_by_names,
    list_images,
    names,
    pair_folders,
    read_name_list,
    read_rgb_float,
    warn_unmatched,
)
from ramir.data.mixture import MixtureDataset
from ramir.data.online import Degradation, build_degradation, resolve_paths
from ramir.errors import ConfigError, DataError, ImageError, RamirError, reject_unknown_keys

SOURCE_TYPES: dict[str, str] = {
    "clean": "a folder of clean images (searched recursively) made into pairs online by `degradation` "
    "(default identity); layout `folder`",
    "paired": "a folder of real (degraded, clean) pairs in one of the LAYOUTS (default input_target)",
}
SOURCE_KEYS = frozenset(
    {
        "name",
        "type",
        "root",
        "layout",
        "degradation",
        "base",
        "weight",
        "max_images",
        "input_dir",
        "target_dir",
        "exclude",
        "only",
    }
)
TRAIN_KEYS = frozenset(
    {"patch_size", "samples_per_epoch", "flip", "vflip", "rot90", "context", "small_images", "sources"}
)
VAL_KEYS = frozenset({"size", "max_images", "sources"})


@dataclass(frozen=True)
class SourceSpec:
    """One entry of ``sources:``, validated."""

    name: str
    type: str
    roots: tuple[Path, ...]
    layout: str | None = None
    degradation: Any = None
    # a clean source's photos are first made into this (input and target alike): "the photo as it
    # is", e.g. a blurred photo the tone expert must leave blurred; null: the photos themselves
    base: Any = None
    weight: float = 1.0
    max_images: int | None = None
    input_dir: str | None = None
    target_dir: str | None = None
    exclude: Path | None = None  # a name list (configs/splits/) held out of this source
    only: Path | None = None  # a name list this source is restricted to


@dataclass(frozen=True)
class SplitSpec:
    """``data.train`` or ``data.val``, validated; options that do not apply to the split keep defaults."""

    sources: list[SourceSpec]
    patch_size: int = 64
    samples_per_epoch: int = 10000
    flip: bool = True
    vflip: bool = False
    rot90: bool = False
    context: int = 0
    small_images: str = "pad"
    size: int | None = 128
    max_images: int | None = None
    base_dir: Path | None = field(default=None, compare=False)


def _int(value: Any, name: str, minimum: int = 1, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(
            f"{name}: expected an integer >= {minimum}{' or null' if allow_none else ''}, got {value!r}"
        )
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def parse_source(entry: Any, *, base_dir: str | Path | None = None, where: str = "source") -> SourceSpec:
    """Validate one source mapping (unknown keys, types, layout names) and resolve its root."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
    reject_unknown_keys(entry, SOURCE_KEYS, where)
    # no type: paired when a paired layout is named, else clean (identity unless a degradation is given)
    stype = entry.get("type", "paired" if entry.get("layout", "folder") != "folder" else "clean")
    if stype not in SOURCE_TYPES:
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(SOURCE_TYPES)}, got {stype!r}")
    if "root" not in entry:
        raise ConfigError(f"{where}: missing 'root'")
    raw = entry["root"] if isinstance(entry["root"], list) else [entry["root"]]
    if not raw:
        raise ConfigError(f"{where}.root: expected a folder or a non-empty list of folders")
    roots = tuple(Path(_str(r, f"{where}.root")).expanduser() for r in raw)
    if base_dir is not None:
        roots = tuple(r if r.is_absolute() else Path(base_dir) / r for r in roots)
    layout = entry.get("layout")
    if stype == "clean":
        if layout not in (None, "folder"):
            raise ConfigError(f"{where}: a clean source has layout 'folder', got {layout!r}")
        for key in ("input_dir", "target_dir"):
            if key in entry:
                raise ConfigError(f"{where}: '{key}' applies to paired sources only")
        degradation = entry.get("degradation")
        if isinstance(degradation, dict):  # file paths resolved now, read when the source opens
            degradation = resolve_paths(degradation, base_dir)
        base = entry.get("base")
        if isinstance(base, dict):
            base = resolve_paths(base, base_dir)
        try:  # validate now (kernel files are only read when the source is opened)
            kind = build_degradation(degradation, base_dir=base_dir, load=False).kind
            default_name = "clean" if kind == "none" else kind  # a source of clean photos kept as they are
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            if base is not None:
                build_degradation(base, base_dir=base_dir, load=False)
        except ConfigError as exc:
            raise ConfigError(f"{where}.base: {exc}") from None
    else:
        for key in ("degradation", "base"):
            if key in entry:
                raise ConfigError(
                    f"{where}: a paired source has real inputs; '{key}' applies to clean sources"
                )
        degradation = base = None
        layout = layout or "input_target"
        if layout not in LAYOUTS:
            raise ConfigError(f"{where}: unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
        default_name = LAYOUTS[layout].task if layout != "input_target" else roots[0].name
    lists: dict[str, Path | None] = {}
    for key in ("exclude", "only"):
        lists[key] = None
        if key in entry:
            listed = Path(_str(entry[key], f"{where}.{key}")).expanduser()
            lists[key] = listed if listed.is_absolute() or base_dir is None else Path(base_dir) / listed
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise ConfigError(f"{where}.weight: expected a number >= 0, got {weight!r}")
    return SourceSpec(
        name=_str(entry.get("name", default_name), f"{where}.name"),
        type=stype,
        roots=roots,
        layout=layout,
        degradation=degradation,
        base=base,
        weight=float(weight),
        max_images=_int(entry.get("max_images"), f"{where}.max_images", allow_none=True),
        input_dir=_str(entry["input_dir"], f"{where}.input_dir") if "input_dir" in entry else None,
        target_dir=_str(entry["target_dir"], f"{where}.target_dir") if "target_dir" in entry else None,
        exclude=lists["exclude"],
        only=lists["only"],
    )


def parse_split(
    spec: Any, *, train: bool | None = None, base_dir: str | Path | None = None, where: str | None = None
) -> SplitSpec:
    """Validate ``data.train`` (``train=True``), ``data.val`` (``False``) or either (``None``)."""
    where = where or {True: "data.train", False: "data.val", None: "data"}[train]
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'sources', got {spec!r}")
    allowed = TRAIN_KEYS if train else VAL_KEYS if train is False else TRAIN_KEYS | VAL_KEYS
    reject_unknown_keys(spec, allowed, where)
    entries = spec.get("sources")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.sources: expected a non-empty list of sources")
    sources = [
        parse_source(e, base_dir=base_dir, where=f"{where}.sources[{i}]") for i, e in enumerate(entries)
    ]
    small = spec.get("small_images", "pad")
    if small not in SMALL_IMAGE_POLICIES:
        raise ConfigError(
            f"{where}.small_images: expected one of {', '.join(SMALL_IMAGE_POLICIES)}, got {small!r}"
        )
    return SplitSpec(
        sources=sources,
        patch_size=_int(spec.get("patch_size", 64), f"{where}.patch_size"),
        samples_per_epoch=_int(spec.get("samples_per_epoch", 10000), f"{where}.samples_per_epoch"),
        flip=_bool(spec.get("flip", True), f"{where}.flip"),
        vflip=_bool(spec.get("vflip", False), f"{where}.vflip"),
        rot90=_bool(spec.get("rot90", False), f"{where}.rot90"),
        context=_int(spec.get("context", 0), f"{where}.context", minimum=0),
        small_images=small,
        size=_int(spec.get("size", 128), f"{where}.size", allow_none=True),
        max_images=_int(spec.get("max_images"), f"{where}.max_images", allow_none=True),
        base_dir=Path(base_dir) if base_dir is not None else None,
    )


def _name_filter(src: SourceSpec) -> dict[str, frozenset[str] | None]:
    return {
        "only": None if src.only is None else read_name_list(src.only),
        "exclude": None if src.exclude is None else read_name_list(src.exclude),
    }


def open_source(src: SourceSpec, *, warn: bool = True) -> Source:
    """List (and pair) a source's files; DataError if the folder is missing or holds nothing usable.

    ``only``/``exclude`` name lists select by the clean image's (or the pair's input's) name.
    """
    if src.type == "clean":
        degradation = build_degradation(src.degradation)
        paths: list[Path] = []
        for root in src.roots:
            if not root.is_dir():
                raise DataError(f"source {src.name!r}: folder not found: {root}")
            found = list_images(root)
            if not found:
                raise DataError(f"source {src.name!r}: no images in {root}")
            paths.extend(found)
        paths = filter_by_names(paths, **_name_filter(src))
        if not paths:
            raise DataError(f"source {src.name!r}: its name list leaves no image")
        base = build_degradation(src.base) if src.base is not None else None
        return CleanSource(src.name, paths[: src.max_images], degradation, base)
    pairing = pair_source(src)
    if warn:
        warn_unmatched(pairing, f"source {src.name!r} ({', '.join(map(str, src.roots))})")
    return PairedSource(src.name, _selected_pairs(src, pairing.pairs)[: src.max_images])


def _selected_pairs(src: SourceSpec, pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    if src.only is None and src.exclude is None:
        return pairs
    kept = set(filter_by_names([lq for lq, _ in pairs], **_name_filter(src)))
    selected = [(lq, gt) for lq, gt in pairs if lq in kept]
    if not selected:
        raise DataError(f"source {src.name!r}: its name list leaves no pair")
    return selected


def pair_source(src: SourceSpec) -> Pairing:
    """The pairs of all the roots of a paired source, in root order."""
    total = Pairing()
    for root in src.roots:
        total.extend(
            pair_folders(
                root, src.layout or "input_target", input_dir=src.input_dir, target_dir=src.target_dir
            )
        )
    return total


def _as_split(spec: Any, train: bool | None, base_dir: str | Path | None) -> SplitSpec:
    return spec if isinstance(spec, SplitSpec) else parse_split(spec, train=train, base_dir=base_dir)


def build_dataset(
    spec: dict | SplitSpec, *, seed: int = 0, train: bool = True, base_dir: str | Path | None = None
) -> MixtureDataset | ValidationDataset:
    """The training mixture (``train=True``) or the validation set described by ``spec``."""
    split = _as_split(spec, train, base_dir)
    sources = [open_source(s) for s in split.sources]
    if not train:
        return ValidationDataset(sources, size=split.size, max_images=split.max_images, seed=seed)
    if split.small_images == "skip":
        sources = [drop_small(s, split.patch_size) for s in sources]
    options = PatchOptions(split.patch_size, split.flip, split.vflip, split.rot90, split.context)
    return MixtureDataset(
        [PatchSampler(s, options) for s in sources],
        samples_per_epoch=split.samples_per_epoch,
        weights=[s.weight for s in split.sources],
        seed=seed,
    )


# ------------------------------------------------------------------------------------------- checking
@dataclass
class SourceReport:
    """What :func:`source_reports` found for one source."""

    name: str
    type: str
    roots: tuple[Path, ...]
    count: int = 0
    pairing: str = ""
    problems: list[str] = field(default_factory=list)


def _check_files(source: Source) -> list[str]:
    """Decode every file; pairs must have equal sizes."""
    unreadable: list[Path] = []
    mismatched: list[Path] = []
    if isinstance(source, CleanSource):
        for p in source.paths:
            try:
                read_rgb_float(p)
            except ImageError:
                unreadable.append(p)
    else:
        for lq_path, gt_path in source.pairs:
            shapes = []
            for p in (lq_path, gt_path):
                try:
                    shapes.append(read_rgb_float(p).shape)
                except ImageError:
                    unreadable.append(p)
            if len(shapes) == 2 and shapes[0] != shapes[1]:
                mismatched.append(lq_path)
    problems = []
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable files: {names(unreadable)}")
    if mismatched:
        problems.append(f"{len(mismatched)} inputs differ in size from their target: {names(mismatched)}")
    return problems


def source_reports(
    spec: dict | SplitSpec,
    *,
    train: bool | None = None,
    base_dir: str | Path | None = None,
    decode: bool = True,
) -> list[SourceReport]:
    """Check every source: root exists, images found, names pair up, files decode (``decode=True``).

    The spec itself must be valid (ConfigError otherwise); problems with the data are collected.
    """
    split = _as_split(spec, train, base_dir)
    reports = []
    for src in split.sources:
        rep = SourceReport(src.name, src.type, src.roots)
        reports.append(rep)
        try:
            if src.type == "clean":
                source = open_source(src)
                rep.pairing = f"{len(source)} clean images, degradation {source.degradation}"
                if source.base is not None:
                    rep.pairing += f" of photos made into {source.base} first"
            else:
                pairing = pair_source(src)
                rep.pairing = f"layout {src.layout}: {pairing.summary()}"
                rep.problems.extend(pairing.problems())
                source = PairedSource(src.name, _selected_pairs(src, pairing.pairs)[: src.max_images])
        except RamirError as exc:
            rep.problems.append(str(exc))
            continue
        rep.count = len(source)
        if decode:
            rep.problems.extend(_check_files(source))
    return reports


def verify_sources(
    spec: dict | SplitSpec,
    *,
    train: bool | None = None,
    base_dir: str | Path | None = None,
    decode: bool = True,
) -> list[str]:
    """Problems found in the sources of ``spec`` (``"name: problem"``); an empty list means all is well."""
    return [
        f"{r.name}: {p}"
        for r in source_reports(spec, train=train, base_dir=base_dir, decode=decode)
        for p in r.problems
    ]


# ------------------------------------------------------------------------------------------ MAC images
def mac_images(
    spec: dict | SplitSpec,
    per_source: int = 10,
    size: int = 64,
    seed: int = 0,
    *,
    base_dir: str | Path | None = None,
    skip_identity: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """Centre crops of the degraded inputs for MAC: ``(N, 3, size, size)`` RGB in [0, 1] and their tasks.

    The first ``per_source`` images of each source (RAM_SPEC §3: 10 per degradation type, 64x64);
    clean sources whose degradation is the identity are skipped by default, as the paper analyses the
    7 degradation types only.
    """
    split = _as_split(spec, None, base_dir)
    images: list[torch.Tensor] = []
    tasks: list[str] = []
    for src in split.sources:
        source = open_source(src)
        if (
            skip_identity
            and isinstance(source.degradation, Degradation)
            and source.degradation.kind == "none"
        ):
            continue
        for i in range(min(per_source, len(source))):
            item = fixed_item(source, i, size, seed)
            images.append(item["lq"])
            tasks.append(item["task"])
    if not images:
        raise DataError("no MAC images: every source is empty or the identity")
    return torch.stack(images).clamp_(0, 1), tasks
