"""A contact sheet of the default model at work: one row per task, input | restored | clean, with PSNR.

    python -m experiments.figures.restoration_sheet --suite configs/eval/validation.yaml \\
        --model src/ramir/weights/default.safetensors --out docs/restorations.png

The photos come from a suite's tasks (by default the validation split, which no training run sees),
degraded exactly as ``ramir evaluate`` degrades them; each row shows one image's centre crop at native
resolution (``--crop``) and the PSNR of the whole image (reference protocol). ``--image N`` picks the
N-th image of every task, so the sheet can be redrawn for another model on the same inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from experiments.figures.contact_sheet import centre_crop, label

from ramir import evaluation as ev
from ramir import metrics
from ramir.fileio import atomic_path


def sheet(suite_path: Path, model: str, crop: int, image: int, tasks: list[str] | None) -> np.ndarray:
    import ramir

    suite = ev.load_suite(suite_path)
    restorer = ramir.load(model, device="cpu")
    gap = 4
    header = np.concatenate(
        [
            np.pad(label(crop, t), ((0, 0), (0, gap), (0, 0)), constant_values=255)
            for t in ("input", "restored", "clean")
        ],
        axis=1,
    )
    rows = [
        np.pad(
            label(header.shape[1], f"{Path(model).name} on {suite_path.name}"),
            ((0, 0), (0, 0), (0, 0)),
            constant_values=255,
        ),
        header,
    ]
    chosen = [t for t in suite.tasks if not tasks or t.name in tasks]
    for k, task in enumerate(chosen):
        samples = list(ev.iter_samples(task, max_images=image + k + 1))
        s = samples[(image + k) % len(samples)]  # a different photo per row
        out = np.clip(np.asarray(restorer.restore(s.lq), dtype=np.float32), 0, 1)
        p_in, p_out = (metrics.psnr(metrics.quantize_u8(x), s.gt_u8, crop_border=4) for x in (s.lq, out))
        tiles = [metrics.quantize_u8(centre_crop(x, crop)) for x in (s.lq, out)] + [
            centre_crop(s.gt_u8, crop)
        ]
        text = (
            f"{task.name} ({s.name}): clean input, restored {p_out:.2f} dB"
            if not np.isfinite(p_in)
            else f"{task.name} ({s.name}): {p_in:.2f} -> {p_out:.2f} dB ({p_out - p_in:+.2f})"
        )
        row = np.concatenate(
            [np.pad(t, ((0, gap), (0, gap), (0, 0)), constant_values=255) for t in tiles], axis=1
        )
        rows += [label(row.shape[1], text), row]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", type=Path, default=Path("configs/eval/validation.yaml"))
    p.add_argument("--model", default="src/ramir/weights/default.safetensors")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--crop", type=int, default=192, help="centre crop shown, native resolution")
    p.add_argument("--image", type=int, default=0, help="which image of each task (0)")
    p.add_argument("--task", action="append", help="only these tasks (repeatable)")
    args = p.parse_args(argv)
    img = sheet(args.suite, args.model, args.crop, args.image, args.task)
    with atomic_path(args.out) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise SystemExit(f"could not encode {args.out}")
        tmp.write_bytes(buf.tobytes())
    print(f"{args.out}: {img.shape[1]}x{img.shape[0]}, {args.out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
