"""Peak memory and time of restoring one large image (default 6000x4000, 24 MP) with tiled inference.

Each configuration runs in its own subprocess, so its peak resident set size (``ru_maxrss``) is its own.
The image is random float32 RGB held as an (H, W, 3) array, as ``ramir restore`` holds a decoded file.

    python -m benchmarks.tiled_restore_bench ram-swinir-small --allow-random --tile 256
    python -m benchmarks.tiled_restore_bench path/to/model.safetensors --tile 256 512 --device cuda

Reported per configuration: wall time, megapixels per second, peak RSS of the process, the part of it
above the baseline (model loaded and image allocated), the input+output buffers for comparison, and on
CUDA the peak allocated device memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import current_rss_mb, describe_machine, peak_rss_mb


def worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from ramir.inference import load

    if args.threads:
        torch.set_num_threads(args.threads)
    tile: int | str = "auto" if args.tile == "auto" else int(args.tile)
    restorer = load(args.model, device=args.device, tile=tile, overlap=args.overlap,
                    precision=args.precision, allow_random=args.allow_random)
    w, h = args.width, args.height
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    baseline = current_rss_mb()
    if restorer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = restorer.restore_rgb(rgb)
    if restorer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert out.shape == rgb.shape
    result = {
        "model": restorer.name, "tile": args.tile, "overlap": args.overlap, "size": f"{w}x{h}",
        "device": str(restorer.device), "precision": args.precision, "threads": torch.get_num_threads(),
        "seconds": round(elapsed, 2), "mp_per_s": round(w * h / 1e6 / elapsed, 3),
        "peak_rss_mib": round(peak_rss_mb(), 1), "baseline_rss_mib": round(baseline, 1),
        "above_baseline_mib": round(peak_rss_mb() - baseline, 1),
        "image_buffers_mib": round(2 * rgb.nbytes / 2**20, 1),  # input + output, float32
    }
    if restorer.device.type == "cuda":
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="checkpoint path, or a registered architecture name with --allow-random")
    p.add_argument("--allow-random", action="store_true", help="use random weights for architecture names")
    p.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT (default 6000x4000)")
    p.add_argument("--tile", nargs="+", default=["256"], help="tile sizes to measure (0 = whole, auto)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per configuration")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))

    if args.worker:
        args.tile = args.tile[0]
        print(json.dumps(worker(args)))
        return 0

    print(describe_machine())
    results = []
    for tile in args.tile:
        cmd = [sys.executable, "-m", "benchmarks.tiled_restore_bench", args.model, "--worker",
               "--size", args.size, "--tile", tile, "--overlap", str(args.overlap), "--device", args.device,
               "--precision", args.precision]
        if args.allow_random:
            cmd.append("--allow-random")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"tile {tile}: still running after {args.timeout:g} s, stopped", file=sys.stderr)
            continue
        if proc.returncode != 0:
            print(f"tile {tile}: failed\n{proc.stderr.strip()}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"tile {r['tile']:>5}  overlap {r['overlap']:>3}  {r['size']}  {r['device']} {r['precision']} "
              f"x{r['threads']}: {r['seconds']:8.1f} s  {r['mp_per_s']:6.3f} MP/s  "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB (baseline {r['baseline_rss_mib']:.0f}, "
              f"+{r['above_baseline_mib']:.0f} during restore; image in+out {r['image_buffers_mib']:.0f})"
              + (f"  CUDA peak {r['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in r else ""), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0 if len(results) == len(args.tile) else 1


if __name__ == "__main__":
    sys.exit(main())
