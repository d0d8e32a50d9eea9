"""Is a low-light result washed out? Its chroma against the clean photo's, and the colour error it
would have with its chroma scaled.

    python -m benchmarks.chroma_scale --model src/ramir/weights/default.safetensors --select val-lowlight

Per image, mean CIELAB chroma (C*) of the output over the clean photo's; then the mean CIEDE2000 colour
error (:func:`ramir.metrics.colour_error`) of the output with a* and b* scaled by each ``--scale``. If the
outputs were grey and washed out, the ratio would sit below 1 and a scale above 1 would cut the error; a
ratio about 1 says the colour error left is lightness and hue, which no saturation fix reaches.
Validation data only (configs/eval/validation.yaml).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def scaled_chroma(lab: np.ndarray, k: float) -> np.ndarray:
    """The image of CIELAB ``lab`` with a* and b* multiplied by ``k``: sRGB, clipped, rounded to 8 bits."""
    from skimage.color import lab2rgb

    scaled = lab.copy()
    scaled[..., 1:] *= k
    return np.round(np.clip(lab2rgb(scaled), 0, 1) * 255) / 255


def mean_chroma(lab: np.ndarray) -> float:
    """Mean CIELAB chroma C* = |(a*, b*)|."""
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


def main(argv: list[str] | None = None) -> int:
    from ramir.evaluation import iter_samples, load_suite
    from ramir.inference import load
    from ramir.metrics import colour_error, to_lab

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--suite", default="configs/eval/validation.yaml")
    ap.add_argument("--select", action="append", default=None, help="task of the suite (repeatable)")
    ap.add_argument("--scale", type=float, action="append", default=None,
                    help="chroma factor to try (repeatable; default 1.0 1.1 1.2 1.3 1.4 1.5)")
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    scales = args.scale or [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    restorer = load(args.model, device="cpu", tile=0, backend="torch")
    for task in load_suite(args.suite).tasks:
        if args.select is not None and task.name not in args.select:
            continue
        ratios, errors = [], {k: [] for k in scales}
        for s in iter_samples(task, args.max_images):
            clean = s.gt_u8.astype(np.float32) / 255.0
            out = to_lab(restorer.restore(s.lq))  # once per image, shared by the ratio and every scale
            ratios.append(mean_chroma(out) / max(mean_chroma(to_lab(clean)), 1e-6))
            for k in scales:
                errors[k].append(colour_error(scaled_chroma(out, k), clean))
        q = np.percentile(ratios, [25, 50, 75])
        print(f"{task.name}: {len(ratios)} images; output chroma / clean chroma: median {q[1]:.2f} "
              f"(quartiles {q[0]:.2f}-{q[2]:.2f})")
        print("| chroma scale | " + " | ".join(f"{k:g}" for k in scales) + " |")
        print("|---|" + "---|" * len(scales))
        print("| colour error | " + " | ".join(f"{np.mean(errors[k]):.2f}" for k in scales) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
