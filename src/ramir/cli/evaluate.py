"""``ramir evaluate``: PSNR/SSIM of models and baselines on test sets, under both metric protocols."""

from __future__ import annotations

import argparse
import os
import sys

from ramir.cli import add_ensemble_argument, memory_size, tile_size
from ramir.errors import ConfigError

EPILOG = """\
tasks (--task, repeatable):
  NAME=paired:DIR[:LAYOUT]              degraded inputs + targets in DIR, paired by name; LAYOUT is found
                                        from the sub-folders (input/target, hazy/clear, <scene>/blur/sharp,
                                        low/high, low/normal) or named, one of:
                                        {layouts}
  NAME=clean:DIR:DEGRADATION[:LEVEL]    clean images in DIR, degraded here with a fixed seed per image
degradations:
{degradations}

suite file (--suite FILE, YAML; relative paths are relative to the file):
  seed: 0                     # optional (--seed overrides it; a task's own seed wins)
  max_images: null            # optional (--max-images overrides it)
  data_root: ../data          # optional: where the tasks' folders are (--data-root overrides it)
  tasks:
    cbsd68-noise25: {{clean: CBSD68, degradation: noise, level: 25}}
    lsdir-jpeg:     {{clean: LSDIR-val, degradation: jpeg, level: 50}}
    rain100l:       {{paired: Rain100L}}
    gopro:          {{paired: GoPro/test, layout: gopro}}
    mine:           {{paired: my_set, input: degraded, target: clean}}   # sub-folder names
    light-rain:     {{clean: CBSD68, degradation: rain_transfer, level: 0.5,
                     options: {{bank: Rain100H, bank_only: held_out.txt, single: 1.0}}}}
                    # options: further keys of the degradation; bank beside the data, name lists as only:
    large-noise:    {{clean: CBSD68, base: {{kind: zoom, scale: 3}}, degradation: noise, level: 15}}
                    # base: applied to the photo first; its result is the target (here: enlarged)
  models:                     # optional; --model adds to these
    ram-swinir: checkpoints/ram_swinir.safetensors
  baselines: [input, nlm]     # optional; --baseline adds to these

outputs (in --out): report.md (tables per protocol, methods as rows), per_image.csv, results.json
(everything: settings, seeds, protocols, version) and crops/TASK/IMAGE.png (input | methods | target).
Protocols: 'reference' = RAM/BasicSR (uint8 RGB, crop 4, Gaussian SSIM); 'skimage' = PromptIR
(scikit-image on [0,1] floats, no crop). Every number in the outputs names its protocol.

example:
  ramir evaluate --model ram=ckpt.safetensors --baseline input --baseline nlm \\
      --task cbsd68-noise25=clean:data/CBSD68:noise:25 --task rain100l=paired:data/Rain100L \\
      --out eval/ --max-images 5
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ramir.data.folders import LAYOUTS
    from ramir.evaluation import DEGRADATIONS

    degr = "\n".join(f"  {k:<12}{v}" for k, v in DEGRADATIONS.items())
    p = subparsers.add_parser(
        "evaluate",
        help="measure models and baselines on test sets (PSNR/SSIM, both protocols)",
        description="Evaluate restoration models and baselines on paired or synthetically degraded test sets",
        epilog=EPILOG.format(degradations=degr, layouts=", ".join(LAYOUTS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="a checkpoint to evaluate (repeatable); the label defaults to the file stem",
    )
    p.add_argument("--dino", metavar="FOLDER|HUB_NAME", default=None,
                   help="DINOv2 backbone of RAM++ RFR checkpoints: a local folder or a hub name (default: "
                        "$RAMIR_DINOV2, else the name recorded in the checkpoint)")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=["input", "nlm", "bm3d"],
        help="'input': the degraded image itself; 'nlm': OpenCV non-local means; 'bm3d': CBM3D from the "
        "optional bm3d package (pip install 'ramir[bm3d]'); the last two on noise tasks only, told the "
        "true sigma",
    )
    p.add_argument(
        "--task", action="append", default=[], metavar="NAME=SPEC", help="a test task (repeatable)"
    )
    p.add_argument("--suite", metavar="FILE", help="YAML file with tasks (and optionally models, baselines)")
    p.add_argument("--select", action="append", default=[], metavar="TASK",
                   help="only this task of the suite (repeatable)")
    p.add_argument("--out", default="ramir_eval", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="first N images of each task")
    p.add_argument("--seed", type=int, default=None, help="degradation seed of clean tasks (default 0)")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder the suite's task folders are relative to (default: the suite's data_root, "
                        "else the suite file's folder)")
    p.add_argument(
        "--crops",
        type=int,
        default=3,
        metavar="N",
        help="side-by-side crops for the first N images of each task (default: %(default)s)",
    )
    p.add_argument("--crop-size", type=int, default=192, help="crop side in pixels (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: %(default)s)")
    p.add_argument(
        "--tile", type=tile_size, default="auto",
        help="tile size in pixels, 0 = whole image, or auto (default: %(default)s)"
    )
    p.add_argument(
        "--max-memory", type=memory_size, default=None, metavar="SIZE",
        help="memory a restore with --tile auto plans to stay within, e.g. 4G (default 2G)"
    )
    add_ensemble_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir import evaluation as ev

    if args.dino:
        os.environ["RAMIR_DINOV2"] = args.dino  # read where an RFR network loads its backbone
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError("--max-images must be at least 1")
    tile = args.tile
    if args.data_root and not args.suite:
        raise ConfigError("--data-root applies to a --suite's tasks; give --suite FILE")
    suite = ev.load_suite(args.suite, seed=args.seed, data_root=args.data_root) if args.suite else ev.Suite()
    seed = args.seed if args.seed is not None else (suite.seed or 0)
    suite_tasks = list(suite.tasks)
    if args.select:
        names = [t.name for t in suite_tasks]
        missing = [n for n in args.select if n not in names]
        if missing:
            raise ConfigError(f"--select: no task {missing[0]!r} in {args.suite} (it has {', '.join(names)})")
        suite_tasks = [t for t in suite_tasks if t.name in args.select]
    tasks = suite_tasks + [ev.parse_task(t, seed=seed) for t in args.task]
    max_images = args.max_images if args.max_images is not None else suite.max_images
    models = dict(suite.models)
    for text in args.model:
        label, path = ev.parse_model_arg(text)
        if label in models:
            raise ConfigError(f"two models are labelled {label!r}; name them with --model LABEL=PATH")
        models[label] = path
    baselines = list(dict.fromkeys([*suite.baselines, *args.baseline]))
    unknown = [b for b in baselines if b not in ev.BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(ev.BASELINES)}")
    if not tasks:
        raise ConfigError("nothing to evaluate: give --task NAME=SPEC or --suite FILE (see --help)")
    if not models and not baselines:
        raise ConfigError("nothing to evaluate: give --model PATH and/or --baseline input|nlm|bm3d")
    ev.check_output_dir(args.out, overwrite=args.overwrite)

    methods = [ev.BASELINES[b]() for b in baselines]
    for label, path in models.items():
        print(f"ramir: loading {label} from {path}", file=sys.stderr)
        methods.append(
            ev.model_method(label, path, device=args.device, tile=tile, max_memory=args.max_memory,
                            ensemble=args.ensemble)
        )
    settings = {
        "device": args.device,
        "tile": tile,
        "max_images": max_images,
        "seed": seed,
        "crops": args.crops,
        "crop_size": args.crop_size,
        "suite": args.suite,
        "command": " ".join(sys.argv),
    }
    result = ev.evaluate(
        tasks,
        methods,
        max_images=max_images,
        crops=args.crops,
        crop_size=args.crop_size,
        settings=settings,
        log=lambda msg: print(f"ramir: {msg}", file=sys.stderr),
    )
    written = ev.write_outputs(result, args.out, overwrite=args.overwrite)
    print(f"ramir: wrote {written['report.md']}", file=sys.stderr)
    print(ev.report_markdown(result).split("## Tasks")[0].rstrip())
    return 0
