"""MAC cost per 64x64 image: path steps one at a time (the reference) vs batched, same ranking.

    python -m benchmarks.mac_bench                                  # ram-swinir, T=200 (heavy: minutes)
    python -m benchmarks.mac_bench --model ram-swinir-small --steps 200 --threads 2
    python -m benchmarks.mac_bench --model ram-swinir --steps 8 --batch-steps 8

Each setting runs in a fresh process (its own peak RSS). The batched runs must give the same scores up to
float reduction order and the identical ranking (ties, e.g. a module and the child whose output it
returns, are exact in both and broken by layer order).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def test_image(size: int, seed: int) -> torch.Tensor:
    """A natural image crop (scikit-image's astronaut), ImageNet-normalised, (1, 3, size, size)."""
    from ramir.imagespace import normalize

    try:
        from skimage import data

        img = data.astronaut().astype(np.float32) / 255.0
        rng = np.random.default_rng(seed)
        top, left = (int(v) for v in rng.integers(0, np.array(img.shape[:2]) - size))
        crop = img[top : top + size, left : left + size]
        x01 = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
    except (ImportError, OSError):  # no bundled data: a seeded random image
        x01 = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return normalize(x01)


def measure(model_name: str, steps: int, batch_steps: int | None, size: int, seed: int, device: str) -> dict:
    from benchmarks.common import peak_rss_mb
    from ramir import create_model
    from ramir.mac import mac_scores

    torch.manual_seed(seed)
    model = create_model(model_name).eval().to(device)
    x = test_image(size, seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    scores = mac_scores(model, x, steps=steps, batch_steps=batch_steps,
                        generator=torch.Generator().manual_seed(seed))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"model": model_name, "steps": steps, "batch_steps": batch_steps, "seconds_per_image": seconds,
            "scores": scores, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu_mb}


def compare(reference: dict[str, float], other: dict[str, float]) -> tuple[float, bool, str]:
    """Max relative score difference, identical ranking?, and the first differing rank if not."""
    from ramir.ranking import ranking_from_scores

    ref = np.array(list(reference.values()))
    got = np.array([other[name] for name in reference])
    rels = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-30)
    rel = float(rels.max())
    a, b = ranking_from_scores(reference), ranking_from_scores(other)
    worst = list(reference)[int(rels.argmax())]
    if a == b:
        return rel, True, f"(largest difference: {worst}, rank {a.index(worst) + 1})"
    i = next(k for k in range(len(a)) if a[k] != b[k])
    gap = abs(reference[a[i]] - reference[b[i]]) / max(abs(reference[a[i]]), 1e-30)
    return rel, False, f"rank {i + 1}: {a[i]} vs {b[i]} (relative score gap {gap:.2g})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ram-swinir")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-steps", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="(internal) measure one setting, print JSON")
    p.add_argument("--one", type=int, default=0, help="(internal) batch_steps of this setting; 0 = unbatched")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.json:
        result = measure(args.model, args.steps, args.one or None, args.size, args.seed, args.device)
        print(json.dumps(result))
        return

    from benchmarks.common import describe_machine, run_isolated

    common = ["--model", args.model, "--steps", str(args.steps), "--size", str(args.size),
              "--seed", str(args.seed), "--device", args.device]
    print(describe_machine())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{where}: {args.model}, T={args.steps}, one {args.size}x{args.size} "
          f"image, {args.threads} thread(s), {args.device}")
    print(f"{'batch_steps':>11} {'s/image':>9} {'speed-up':>8} {'peak RSS MB':>11} {'GPU MB':>7} "
          f"{'max rel diff':>12}  ranking")
    base = run_isolated("benchmarks.mac_bench", [*common, "--one", "0"], args.threads)
    gpu = f"{base['peak_gpu_mb']:.0f}" if base["peak_gpu_mb"] is not None else "-"
    print(f"{'1':>11} {base['seconds_per_image']:>9.2f} {1.0:>8.2f} {base['peak_rss_mb']:>11.0f} {gpu:>7}",
          flush=True)
    best = None
    for b in args.batch_steps:
        r = run_isolated("benchmarks.mac_bench", [*common, "--one", str(b)], args.threads)
        rel, same, why = compare(base["scores"], r["scores"])
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        speedup = base["seconds_per_image"] / r["seconds_per_image"]
        verdict = ("identical " if same else "DIFFERS ") + why
        print(f"{b:>11} {r['seconds_per_image']:>9.2f} {speedup:>8.2f} "
              f"{r['peak_rss_mb']:>11.0f} {gpu:>7} {rel:>12.2g}  {verdict}",
              flush=True)
        if best is None or r["seconds_per_image"] < best[1]:
            best = (b, r["seconds_per_image"])
    if best is not None:
        print(f"best: batch_steps={best[0]}, {best[1]:.2f} s/image "
              f"({base['seconds_per_image'] / best[1]:.2f}x the one-step-at-a-time time)")


if __name__ == "__main__":
    main()
