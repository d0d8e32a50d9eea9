"""``ramir restore``: restore image files, folders and globs into an output folder.

Rules that protect the user's files:

- Outputs go to ``-o OUTDIR`` (default ``restored/``, announced), keep the input's name, extension and
  format (``a.png`` -> ``OUTDIR/a.png``, or ``a_restored.png`` with ``--suffix _restored``; never
  ``a.png.png``), and keep the relative folder structure of folder and glob inputs.
- An input is never written over, not even with ``--overwrite``.
- An existing output is kept: the file is *skipped* with a one-line message (``--skip-existing``: skipped
  quietly, for resuming a large run); ``--overwrite`` replaces it. Skips are not failures.
- Outputs are written atomically. A file that fails prints ``ramir: FILE: REASON`` and the run goes on;
  the exit status is 1 when any file failed, else 0. A missing model or bad option exits with 2.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ramir.cli import add_ensemble_argument, memory_size, tile_size
from ramir.errors import ImageError, RamirError, first_line, step
from ramir.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

DEFAULT_OUTDIR = "restored"
_GLOB_CHARS = set("*?[")


@dataclass
class Job:
    """One input file and where its restoration goes."""

    source: Path
    relative: Path  # the output's path relative to OUTDIR, before the suffix


def _parse_pixels(text: str) -> int:
    """``100000000``, ``100M``, ``100MP`` or ``1.5G`` pixels."""
    t = text.strip().upper().removesuffix("P")
    factor = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if factor != 1 else t) * factor
    except ValueError:
        msg = f"expected a pixel count like 100000000 or 100M, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the pixel limit must be positive")
    return int(value)


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore images (files, folders, globs) with a RAM model",
        description="Restore images with a RAM model. Outputs keep the input's name, format, size, mode, "
        "bit depth, alpha and colour profile; inputs are never overwritten.",
        epilog="Existing outputs are skipped with a message unless --overwrite. A file that cannot be "
        "restored prints one line and the others go on; the exit status is 1 if any file failed, 2 for a "
        "bad option or model, else 0.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", metavar="OUTDIR", default=None,
                   help=f"output folder (default: ./{DEFAULT_OUTDIR}/)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="descend into sub-folders (and let ** match folders in globs)")
    p.add_argument("--model", metavar="NAME|PATH", default=None,
                   help="checkpoint file (ramir .safetensors or reference .pth); default: the embedded model")
    p.add_argument("--dino", metavar="FOLDER|HUB_NAME", default=None,
                   help="DINOv2 backbone of RAM++ RFR checkpoints: a local folder or a hub name (default: "
                        "$RAMIR_DINOV2, else the name recorded in the checkpoint)")
    p.add_argument("--tile", type=tile_size, default="auto", metavar="SIZE|auto",
                   help="tile size in pixels, 0 for whole images, or auto (default): the largest tiles "
                        "that keep the restore within --max-memory")
    p.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                   help="memory a restore with --tile auto plans to stay within, e.g. 4G "
                        "(default 2G, whatever the machine has)")
    p.add_argument("--overlap", type=_nonnegative, default=32, metavar="PX", help="tile overlap (default 32)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the network runs (default: cuda > mps > cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="compute precision (reduced precision falls back to fp32 if it fails)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="run the network with PyTorch or onnxruntime (CPU, fp32; exported once and cached). "
                        "auto (default): onnxruntime for the embedded model on the CPU in fp32 when it is "
                        "installed (about 3x faster there), else PyTorch")
    p.add_argument("--twin-mask", action="store_true",
                   help="restore with complementary masks (for models that are only MIM pre-trained)")
    p.add_argument("--compare", action="store_true", help="also write NAME_compare.png: before | after")
    p.add_argument("--suffix", default="", help="appended to output names, e.g. _restored (default: none)")
    exists = p.add_mutually_exclusive_group()
    exists.add_argument("--skip-existing", action="store_true",
                        help="skip existing outputs quietly (by default they are skipped with a message)")
    exists.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    p.add_argument("--max-pixels", type=_parse_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse larger images (default {DEFAULT_MAX_PIXELS // 1_000_000}M)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say per file what was done: the restoration(s) in order with the router's "
                   "confidence, or that the photo was left unchanged")
    p.add_argument("--expert", default=None, metavar="NAME[,NAME...]|none",
                   help="routed models (the default one): skip the router and apply these restorations in "
                   "order (e.g. noise, jpeg,noise), or none; names: ramir info MODEL")
    p.add_argument("--max-steps", type=int, default=None, metavar="K",
                   help="routed models: at most K restorations per photo, each chosen again on the result "
                   "(default: the model's own, 2 for the default model); 1 = one expert per photo")
    add_ensemble_argument(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------- inputs
def _has_magic(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)


def _glob_base(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard (outputs keep the structure below it)."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def collect_jobs(inputs: list[str], recursive: bool) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders and globs into jobs (each file once); also return (input, reason) problems."""
    jobs: list[Job] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            jobs.append(Job(path, relative))

    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and _is_image_name(p))
            if not found:
                below = not recursive and any(p.is_dir() for p in path.iterdir())
                hint = " (use -r for its sub-folders)" if below else ""
                problems.append((text, "no image files in this folder" + hint))
            for p in found:
                add(p, p.relative_to(path))
        elif path.exists() or not _has_magic(text):
            add(path, Path(path.name))  # a missing file fails later with its own one-line reason
        else:  # a glob the shell did not expand (Windows, or quoted)
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=recursive))
            files = [m for m in matches if m.is_file()]
            if not files:
                problems.append((text, "no files match this pattern"))
            base = _glob_base(os.path.expanduser(text))
            for m in files:
                try:
                    rel = m.relative_to(base)
                except ValueError:
                    rel = Path(m.name)
                add(m, rel)
    return jobs, problems


def output_path(job: Job, outdir: Path, suffix: str) -> Path:
    """OUTDIR/REL/STEM+SUFFIX+EXT: the extension is the input's, never doubled."""
    rel = job.relative
    return outdir / rel.parent / f"{rel.stem}{suffix}{rel.suffix}"


def compare_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_compare.png")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class InputGuard:
    """Knows every input (by resolved path and by inode, so links count too) to never write over one."""

    def __init__(self, inputs: list[Path]) -> None:
        self.paths = {p.resolve() for p in inputs}
        self.ids = {i for i in map(_identity, inputs) if i is not None}

    def is_input(self, path: Path) -> bool:
        return path.resolve() in self.paths or _identity(path) in self.ids


# ------------------------------------------------------------------------------------------------ run
def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _load_restorer(args: argparse.Namespace):
    from ramir.inference import load

    memory = {"max_memory": args.max_memory} if args.max_memory else {}
    with step(f"loading the model {args.model or '(embedded default)'}"):
        return load(args.model, device=args.device, tile=args.tile, overlap=args.overlap,
                    precision=args.precision, twin_mask=args.twin_mask, backend=args.backend,
                    announce=_say, ensemble=args.ensemble, **memory)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ramir.imageio import read_image, write_compare, write_image

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.suffix and (os.sep in args.suffix or "/" in args.suffix):
        raise RamirError(f"--suffix must not contain a path separator: {args.suffix!r}")
    if args.dino:
        os.environ["RAMIR_DINOV2"] = args.dino  # read where an RFR network loads its backbone
    start = time.perf_counter()  # the summary counts loading and any one-time ONNX export
    restorer = _load_restorer(args)
    names = list(getattr(restorer, "expert_names", []))
    if args.expert is not None:
        if not names:
            raise RamirError("--expert needs a routed model (like the default one); this one has none")
        from ramir.routing import parse_experts

        parse_experts(args.expert, names)  # an unknown name: one line before any file is read
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise RamirError(f"--max-steps must be at least 1, got {args.max_steps}")
        restorer.max_steps = args.max_steps
    done: dict[str, int] = {}
    outdir = Path(args.output if args.output is not None else DEFAULT_OUTDIR).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise RamirError(f"-o {outdir}: is a file; -o names the output folder (e.g. -o restored/)")
    if args.output is None:
        _say(f"ramir: writing to {DEFAULT_OUTDIR}{os.sep} (the default output folder; change it with -o)")

    jobs, problems = collect_jobs(args.inputs, args.recursive)
    restored = skipped = failed = 0
    for text, reason in problems:
        _say(f"ramir: {text}: {reason}")
        failed += 1

    guard = InputGuard([job.source for job in jobs])
    planned: dict[Path, Path] = {}
    debug = bool(getattr(args, "debug", False))
    bar = tqdm(jobs, desc="restoring", unit="image", file=sys.stderr, disable=None, leave=False)
    for job in bar:
        out = output_path(job, outdir, args.suffix)
        try:
            key = out.resolve()
            if guard.is_input(out) or (args.compare and guard.is_input(compare_path(out))):
                raise ImageError(f"refusing to write over an input ({out}); choose another -o or --suffix")
            if key in planned:
                raise ImageError(f"{out} is also the output of {planned[key]}; restore them separately")
            planned[key] = job.source
            if out.exists() and not args.overwrite:
                skipped += 1
                if not args.skip_existing:
                    _say(f"ramir: {job.source}: skipped, {out} exists (--overwrite replaces it)")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = read_image(job.source, max_pixels=args.max_pixels)
                result = restorer.restore_rgb(loaded.rgb, args.expert)
                write_image(out, result, like=loaded, overwrite=args.overwrite)
                if args.compare:
                    write_compare(compare_path(out), loaded.rgb, result, overwrite=args.overwrite)
            for note in loaded.notes:
                _say(f"ramir: note: {job.source}: {note}")
            for w in caught:  # precision fallbacks, out-of-memory retries: one line each, no source lines
                _say(f"ramir: warning: {job.source}: {w.message}")
            restored += 1
            decisions = getattr(restorer, "last_decisions", [])
            if names and decisions:
                done[decisions[0].summary] = done.get(decisions[0].summary, 0) + 1
                if args.verbose:
                    _say(f"ramir: {job.source}: {decisions[0].describe()}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if debug:
                raise
            failed += 1
            _say(f"ramir: {_one_line(job.source, exc)}")
    bar.close()
    elapsed = time.perf_counter() - start
    export = getattr(restorer, "export_seconds", 0.0)
    note = f" (of which {export:.1f} s exporting to ONNX, once)" if export >= 0.05 else ""
    print(f"restored {restored}, skipped {skipped}, failed {failed} in {elapsed:.1f} s{note}")
    if done:
        counts = sorted(done.items(), key=lambda kv: -kv[1])
        print("restorations: " + ", ".join(f"{k} {v}" for k, v in counts))
    return 1 if failed else 0


def _one_line(source: Path, exc: BaseException) -> str:
    """``FILE: REASON`` on one line; the file is not repeated when the reason already starts with it."""
    msg = first_line(exc)
    if not isinstance(exc, RamirError):
        msg = f"{type(exc).__name__}: {msg}"
    if msg.startswith(f"{source}:"):
        return msg
    return f"{source}: {msg}"
