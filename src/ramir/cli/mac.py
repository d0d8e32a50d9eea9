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
import sys
from pathlib import Path

import numpy as np
import torch

from ramir.errors import ConfigError, DataError, ImageError

METHODS = ("mac", "ig", "random")  # = ramir.ranking.METHODS (imported lazily, in run)
ORDERS = ("random", "adasam")  # = ramir.mac.ORDERS


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
    """The central ``size`` x ``size`` window of an HWC image, with its top-left corner; an image
    smaller than the crop is refused (MAC's path needs every image at one size)."""
    from ramir.data.datasets import centre_box

    h, w = image.shape[:2]
    if h < size or w < size:
        raise ImageError(f"{name} is {w}x{h}, smaller than the {size}x{size} crop (use a smaller --size)")
    top, left, bottom, right = centre_box(h, w, size)
    return image[top:bottom, left:right], top, left


def folder_images(spec: str, size: int) -> tuple[torch.Tensor, list[dict]]:
    """(N, 3, size, size) RGB in [0, 1] from a folder/glob, and where each crop came from."""
    from ramir.data.folders import read_rgb_float

    crops, info = [], []
    for path in _image_paths(spec):
        crop, top, left = centre_crop(read_rgb_float(path), size, str(path))
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ramir.checkpoints import load_network
    from ramir.devices import resolve_device
    from ramir.heatmap import save_heatmap
    from ramir.imagespace import normalize
    from ramir.ranking import rank_layers

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

    device = resolve_device(args.device, allow_mps=False)
    mask_generator = None
    if args.order == "adasam":
        from ramir.adasam import load_mask_generator

        mask_generator = load_mask_generator(args.generator, prefer_ema=args.ema, device=device)
        size = getattr(mask_generator, "img_size", args.size)
        if size != args.size:
            raise ConfigError(f"the mask generator scores exactly {size}x{size} images: use --size {size}")
    model = load_network(args.checkpoint, prefer_ema=args.ema).to(device)
    images, images_info, source = None, None, {}
    if args.images:
        images01, images_info = folder_images(args.images, args.size)
        images, source = normalize(images01), {"images_from": args.images}
    elif args.config:
        images01, images_info = recipe_images(args.config, args.per_source, args.size, args.seed)
        images, source = normalize(images01), {"images_from": args.config, "per_source": args.per_source}
    batch_steps = args.batch_steps if args.batch_steps == "auto" else int(args.batch_steps)
    points = 0 if images is None else len(images) * (args.steps if args.method == "mac" else args.steps + 1)
    if images is not None:
        print(f"ramir mac: {args.method} on {len(images)} image(s) of {args.size}x{args.size}, "
              f"{args.steps} steps", file=sys.stderr)
    with tqdm(total=points, unit="step", desc=args.method.upper(), file=sys.stderr,
              disable=args.quiet or images is None) as bar:
        result = rank_layers(
            model, images, args.method, steps=args.steps, ratio=args.ratio, sharpness=args.sharpness,
            batch_steps=batch_steps, seed=args.seed, order=args.order, mask_generator=mask_generator,
            progress=bar.update,
        )
    result.settings.update(checkpoint=str(args.checkpoint), weights="ema" if args.ema else "raw", **source)
    if mask_generator is not None:
        result.settings["generator"] = str(args.generator)
    result.save(args.out, model, images_info)
    ranking = result.ranking
    print(f"ranked {len(ranking)} layers -> {args.out}")
    for rank, name in enumerate(ranking[: args.show], start=1):
        print(f"{rank:4d}  {result.scores[name]:.6g}  {name}")
    if args.heatmap:
        save_heatmap(args.heatmap, result.scores, model)
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
                        "or auto: 1 on the CPU, where batching does not pay; on a GPU up to 32, as half "
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
