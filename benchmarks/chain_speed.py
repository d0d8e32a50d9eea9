"""Seconds to restore a 1-megapixel photo with a routed model: one step and a two-step chain.

    python -m benchmarks.chain_speed [--model CKPT] [--threads 2] [--backend onnxruntime] [--repeats 3]

Photos: skimage's astronaut resized to ``--size`` square, with noise sigma 25 (one step: noise) and with
haze then noise sigma 12 (two steps: noise, then tone). Median of ``--repeats`` after one warm-up (which
exports each expert for onnxruntime once). Prints the CPU model and the steps taken, so a figure is never
quoted without its machine; targets (issue): <= 1.5 s for one step and <= 3 s for two, on 2 threads.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from ramir.demo import clean_photo
    from ramir.evaluation import degrade
    from ramir.inference import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="onnxruntime", choices=["torch", "onnxruntime"])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clean = clean_photo("astronaut")
    u8 = (clean * 255 + 0.5).astype(np.uint8)
    big = np.asarray(Image.fromarray(u8).resize((args.size, args.size), Image.BICUBIC), np.float32) / 255
    photos = {
        "noise 25": degrade(big, "noise", 25.0, 0),
        "haze + noise 12": degrade(big, "chain", None, 0, {"steps": [{"kind": "haze", "beta": 1.2},
                                                                      {"kind": "noise", "sigma": 12.0}]}),
    }
    r = load(args.model, device="cpu", tile="auto", backend=args.backend)
    print(f"{cpu_name()}; torch {torch.__version__}; {args.threads} threads; backend {r.backend}; "
          f"{args.size}x{args.size}")
    for label, img in photos.items():
        r.restore(img)  # warm-up (and the one-time ONNX export of the experts it uses)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r.restore(img)
            times.append(time.perf_counter() - t)
        d = r.last_decisions[0] if r.last_decisions else None
        steps = d.describe() if d else "-"
        print(f"{label}: {statistics.median(times):.2f} s (median of {args.repeats}; runs "
              f"{', '.join(f'{t:.2f}' for t in times)}); {steps}")


if __name__ == "__main__":
    main()
