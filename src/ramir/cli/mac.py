"""``ramir mac CHECKPOINT``: rank the layers of a pre-trained network by Mask Attribute Conductance.

Stage 2 of RAM (RAM_SPEC §3). Images come from a folder or glob (centre crops of ``--size``) or, with
``--config``, from a recipe's training sources (``--per-source`` degraded crops of each, as the paper's
10 per degradation type). Writes the ranking JSON that ``ramir finetune --ranking`` reads, and
optionally a heat map of the scores.

``--order adasam --generator CKPT`` is RAM++'s MAC (RAMPP_SPEC §d): the path reveals the pixels in the
order of the trained AdaSAM generator (``final.generator.safetensors`` of ``stage: pretrain_adasam``, or
the reference's ``AdaSAM_pretrained.pth``) instead of a random one; crops must be its img_size (128).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ramir.errors import ConfigError, DataError, ImageError

METHODS = ("mac", "ig", "random")
ORDERS = ("random", "adasam")  # = ramir.mac.ORDERS (imported lazily, in run)


def _image_paths(spec: str) -> list[Path]:
    """A folder (searched recursively), a single image file or a glob pattern -> sorted image paths."""
    from ramir.data.folders import IMAGE_EXTENSIONS, list_images

    path = Path(spec)
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise DataError(f"no images in folder {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths
    if path.is_file():
        return [path]
    if not glob.has_magic(spec):
        raise DataError(f"--images: no such folder or file: {spec}")
    paths = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    paths = [p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not paths:
        raise DataError(f"--images: the pattern {spec!r} matches no image files")
    return paths


def centre_crop(image: np.ndarray, size: int, name: str = "image") -> tuple[np.ndarray, int, int]:
    """The central ``size`` x ``size`` window of an HWC image, with its top-left corner."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ImageError(f"{name} is {w}x{h}, smaller than the {size}x{size} crop (use a smaller --size)")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size], top, left


def folder_images(spec: str, size: int) -> tuple[torch.Tensor, list[dict]]:
    """(N, 3, size, size) RGB in [0, 1] from a folder/glob, and where each crop came from."""
    from ramir.data.folders import read_image

    crops, info = [], []
    for path in _image_paths(spec):
        crop, top, left = centre_crop(read_image(path), size, str(path))
        crops.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        info.append({"path": str(path), "top": top, "left": left, "size": size})
    return torch.stack(crops), info


def recipe_images(recipe: str, per_source: int, size: int, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """Degraded centre crops of the recipe's training sources (``data.train``)."""
    from ramir.data import mac_images
    from ramir.training.config import read_recipe_dict

    data = read_recipe_dict(recipe).get("data") or {}
    if not isinstance(data.get("train"), dict):
        raise ConfigError(f"{recipe}: the recipe has no data.train section to take MAC images from")
    images, tasks = mac_images(data["train"], per_source, size, seed, base_dir=Path(recipe).resolve().parent)
    return images, [{"task": task, "size": size} for task in tasks]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available")
    return torch.device(name)


def available_memory(device: torch.device) -> int:
    """Bytes free for the analysis: free GPU memory, or the kernel's MemAvailable (else a quarter of RAM)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def auto_batch_steps(model: torch.nn.Module, image: torch.Tensor, device: torch.device) -> int:
    """Path steps per pass for ``--batch-steps auto``.

    On a GPU, as many as half the free memory allows, up to 32: one 64x64 step leaves it idle, and
    batching paid 4.5x with 8 and 6.95x with 32 points per pass there (H200). On the CPU one step per
    pass: a single step already keeps the cores busy, so batching measured 0.93-1.05x while it
    tripled peak RSS (docs/performance.md, mac part).
    """
    from ramir.mac import suggest_batch_steps

    if device.type == "cpu":
        return 1
    return suggest_batch_steps(model, image, available_memory(device) // 2, limit=32)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ramir.checkpoints import load_network
    from ramir.imagespace import normalize
    from ramir.mac import (
        LinearPathConductance,
        MaskAttributeConductance,
        random_scores,
        ranking_from_scores,
        save_heatmap,
        save_ranking,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("steps", "size", "per_source"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_steps != "auto" and (not args.batch_steps.isdigit() or int(args.batch_steps) < 1):
        raise ConfigError(f"--batch-steps must be 'auto' or an integer >= 1, got {args.batch_steps!r}")
    if args.method != "random" and not (args.images or args.config):
        raise ConfigError("give the images to analyse: --images DIR_OR_GLOB or --config RECIPE")
    if args.images and args.config:
        raise ConfigError("use either --images or --config, not both")
    if args.order == "adasam" and (args.method != "mac" or not args.generator):
        raise ConfigError("--order adasam is a MAC path order (--method mac) and needs the trained mask "
                          "generator: --generator CKPT")
    if args.generator and args.order != "adasam":
        raise ConfigError("--generator orders the pixels with --order adasam only")

    device = _device(args.device)
    mask_generator = None
    if args.order == "adasam":
        from ramir.adasam import load_mask_generator

        mask_generator = load_mask_generator(args.generator, prefer_ema=args.ema, device=device)
        size = getattr(mask_generator, "img_size", args.size)
        if size != args.size:
            raise ConfigError(f"the mask generator scores exactly {size}x{size} images: use --size {size}")
    model = load_network(args.checkpoint, prefer_ema=args.ema).to(device)
    settings: dict = {"method": args.method, "seed": args.seed, "checkpoint": str(args.checkpoint),
                      "weights": "ema" if args.ema else "raw"}
    images_info = None
    if args.method == "random":
        scores = random_scores(model, seed=args.seed)
    else:
        if args.images:
            images01, images_info = folder_images(args.images, args.size)
            settings["images_from"] = args.images
        else:
            images01, images_info = recipe_images(args.config, args.per_source, args.size, args.seed)
            settings["images_from"] = args.config
            settings["per_source"] = args.per_source
        images = normalize(images01)
        points = args.steps if args.method == "mac" else args.steps + 1
        if args.batch_steps == "auto":
            batch_steps = auto_batch_steps(model, images[:1], device)
        else:
            batch_steps = int(args.batch_steps)
        settings.update(steps=args.steps, images=len(images), size=args.size, batch_steps=batch_steps)
        print(f"ramir mac: {args.method} on {len(images)} image(s) of {args.size}x{args.size}, "
              f"{args.steps} steps, {batch_steps} per forward pass", file=sys.stderr)
        with tqdm(total=len(images) * points, unit="step", desc=args.method.upper(), file=sys.stderr,
                  disable=args.quiet) as bar:
            if args.method == "mac":
                settings.update(ratio=args.ratio, sharpness=args.sharpness, order=args.order)
                if mask_generator is not None:
                    settings["generator"] = str(args.generator)
                analysis = MaskAttributeConductance(model, progress=bar.update)
                scores = analysis.attribute(
                    images, steps=args.steps, ratio=args.ratio, sharpness=args.sharpness,
                    batch_steps=batch_steps, generator=torch.Generator().manual_seed(args.seed),
                    order=args.order, mask_generator=mask_generator,
                )
            else:
                analysis = LinearPathConductance(model, progress=bar.update)
                scores = analysis.attribute(images, steps=args.steps, batch_steps=batch_steps)

    save_ranking(args.out, scores, model, settings, images_info)
    ranking = ranking_from_scores(scores)
    print(f"ranked {len(ranking)} layers -> {args.out}")
    for rank, name in enumerate(ranking[: args.show], start=1):
        print(f"{rank:4d}  {scores[name]:.6g}  {name}")
    if args.heatmap:
        save_heatmap(args.heatmap, scores, model)
        print(f"heat map -> {args.heatmap}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "mac", help="rank layers by Mask Attribute Conductance (stage 2)",
        description="Rank the layers of a pre-trained network by Mask Attribute Conductance (RAM stage 2); "
        "the ranking JSON feeds `ramir finetune --ranking`.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="pre-trained network (a ramir or reference checkpoint)")
    parser.add_argument("--images", metavar="DIR_OR_GLOB", help="degraded images: a folder, file or glob")
    parser.add_argument("--config", "--data", dest="config", metavar="RECIPE",
                        help="take images from the recipe's data.train sources instead")
    parser.add_argument("--per-source", type=int, default=10, help="images per source with --config (10)")
    parser.add_argument("--size", type=int, default=64, help="centre-crop size (64, as the paper)")
    parser.add_argument("--steps", type=int, default=200, help="path steps T (200)")
    parser.add_argument("--ratio", type=float, default=0.5, help="mask ratio where the path starts (0.5)")
    parser.add_argument("--sharpness", type=float, default=1e4, help="sigmoid sharpness of the mask (1e4)")
    parser.add_argument("--batch-steps", default="auto",
                        help="path steps per forward pass: an integer (1 = one at a time, as the reference) "
                        "or auto: 1 on the CPU, where batching does not pay; on a GPU up to 16, as half "
                        "the free memory allows (auto)")
    parser.add_argument("--method", choices=METHODS, default="mac",
                        help="mac, or a baseline of the paper: ig (linear path), random")
    parser.add_argument("--order", choices=ORDERS, default="random",
                        help="the order in which the mask path reveals pixels: random (RAM) or adasam "
                        "(RAM++: the trained generator's, least likely masked first; needs --generator)")
    parser.add_argument("--generator", metavar="CKPT",
                        help="trained AdaSAM mask generator for --order adasam (its raw weights, or the "
                        "EMA with --ema)")
    parser.add_argument("--out", "-o", default="ranking.json", help="ranking JSON to write (ranking.json)")
    parser.add_argument("--heatmap", metavar="PNG", help="also draw the scores as a heat map")
    parser.add_argument("--seed", type=int, default=0, help="pixel orders / image choice / random scores (0)")
    parser.add_argument("--ema", action="store_true",
                        help="analyse the EMA weights (default: the raw weights fine-tuning starts from)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--show", type=int, default=10, help="print the top N layers (10)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
