"""Time of ``--ensemble N`` on a 1-megapixel photo with the embedded model, noisy and blurred.

    python -m benchmarks.ensemble_speed --threads 2

The views an expert runs are the fewer of N and those its checkpoint allows (the noise expert 2), and a
photo this large is deblurred at the training photos' scale (docs/routing.md, "Large photos"), so the time
grows by less than N. Each figure is the best of ``--repeats`` restores after one warm-up (which pays for
the onnxruntime export). Benchmark an idle machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    import cv2
    from skimage import data

    from benchmarks.common import describe_machine
    from ramir.inference import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--views", default="1,2,8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", type=int, default=1000, help="the photo's side in pixels (default 1000: 1 MP)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clean = cv2.resize(data.astronaut(), (args.side, args.side)).astype(np.float32) / 255
    photos = {
        "noise 25": np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32),
        "blur 2": cv2.GaussianBlur(clean, (0, 0), 2.0),
    }
    print(describe_machine())
    print("| views asked | photo | backend | restorations | seconds |")
    print("|---|---|---|---|---|")
    for views in (int(v) for v in args.views.split(",")):
        restorer = load(None, ensemble=views)
        for name, photo in photos.items():
            restorer.restore(photo)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                restorer.restore(photo)
                times.append(time.perf_counter() - start)
            steps = "+".join(restorer.last_decisions[0].experts) or "none"
            print(f"| {views} | {name} | {restorer.backend} | {steps} | {min(times):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
