"""Restore backends and precisions of a model on the CPU: speed and what they cost in PSNR.

    python -m benchmarks.backend_bench                       # the embedded default model, 1 and 2 threads
    python -m benchmarks.backend_bench --model runs/x/final.safetensors --size 1024 --repeats 5

Speed: median seconds to restore one ``--size`` x ``--size`` photo (skimage's astronaut, resized, with
noise sigma 25) as a whole image, for PyTorch fp32, PyTorch bf16 autocast and onnxruntime fp32.
Quality: PSNR (reference protocol) over the seven degraded photos of ``make demo``, per variant, and the
PSNR of each variant's output against the PyTorch fp32 output (how far reduced precision moves it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

VARIANTS = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")]


def as_u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def speed_photo(size: int) -> np.ndarray:
    from PIL import Image

    from ramir.demo import clean_photo
    from ramir.evaluation import degrade

    clean = clean_photo("astronaut")
    big = np.asarray(Image.fromarray(as_u8(clean)).resize((size, size), Image.BICUBIC), np.float32) / 255.0
    return degrade(big, "noise", 25.0, 0)


def quality(restorers: dict[str, object]) -> dict[str, tuple[float, float]]:
    """{variant: (mean PSNR vs clean over the demo cases, mean PSNR vs the fp32 PyTorch output)}."""
    from ramir.demo import CASES, clean_photo, degrade_case
    from ramir.metrics import psnr

    scores: dict[str, list[float]] = {k: [] for k in restorers}
    drift: dict[str, list[float]] = {k: [] for k in restorers}
    for _name, photo, kind, level, seed in CASES:
        clean = clean_photo(photo)
        degraded = degrade_case(clean, kind, level, seed)
        outputs = {k: as_u8(r.restore(degraded)) for k, r in restorers.items()}
        ref = outputs["torch fp32"]
        for k, out in outputs.items():
            scores[k].append(psnr(out, as_u8(clean)))
            drift[k].append(min(psnr(out, ref), 99.0))  # identical outputs: cap the infinite PSNR
    return {k: (float(np.mean(scores[k])), float(np.mean(drift[k]))) for k in restorers}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded default model)")
    p.add_argument("--size", type=int, default=1024, help="side of the timed photo (default 1024: 1 MP)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import ramir
    from benchmarks.common import describe_machine, median_time

    photo = speed_photo(args.size)
    print(describe_machine())
    print(f"model {args.model or 'default'}; "
          f"{args.size}x{args.size} whole image, median of {args.repeats}")
    print(f"{'variant':22s} {'threads':>7s} {'median s':>9s} {'MP/s':>7s} {'vs torch fp32':>13s}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        base = None
        for backend, precision in VARIANTS:
            t0 = time.perf_counter()
            restorer = ramir.load(args.model, device="cpu", tile=0, precision=precision, backend=backend)
            setup = time.perf_counter() - t0
            seconds, _ = median_time(lambda r=restorer: r.restore(photo), args.repeats)
            base = base or seconds
            label = f"{backend} {precision}"
            print(f"{label:22s} {threads:7d} {seconds:9.3f} {args.size**2 / 1e6 / seconds:7.3f} "
                  f"{base / seconds:12.2f}x   (load+setup {setup:.1f} s)", flush=True)

    torch.set_num_threads(max(args.threads))
    restorers = {f"{b} {q}": ramir.load(args.model, device="cpu", tile=0, precision=q, backend=b)
                 for b, q in VARIANTS}
    print("\nquality over the 7 demo photos (reference protocol PSNR, dB):")
    print(f"{'variant':22s} {'vs clean':>9s} {'vs torch fp32 output':>21s}")
    for k, (vs_clean, vs_fp32) in quality(restorers).items():
        print(f"{k:22s} {vs_clean:9.2f} {vs_fp32:21.2f}")


if __name__ == "__main__":
    main()
