"""The GPU side of the performance issue, as one short script for a lent GPU machine.

    PYTHONPATH=src:. python -m benchmarks.gpu_bench --out DIR          # every part, about 8 minutes
    PYTHONPATH=src:. python -m benchmarks.gpu_bench --parts mac train   # some parts

Parts, each in its own process with its own time limit (so one slow or failing part cannot take the
others with it), each appending JSON lines to ``DIR/gpu_bench.jsonl`` and a table to stdout:

- ``forward``: batch-1 forward of the reference configs and the default network at 256 and 512, fast
  against straightforward path in fp32 (TF32 off, so fp32 means fp32), and the fast path under bf16
  autocast with its largest difference from fp32; CUDA-synchronised medians.
- ``mac``: MAC seconds per 64x64 image at T = 200 on the RAM-SwinIR reference config, one path point at a
  time (the reference) against batched points; the batched scores must give the identical ranking.
- ``train``: engine steps per second and peak GPU memory for the RAM-SwinIR reference config on
  64x64 patches: batch 4 (the paper's per-GPU setting) in fp32, bf16 AMP, bf16 AMP + channels_last, and
  batch 32 in fp32 and bf16 AMP.
- ``compile``: the same step under ``torch.compile`` (bf16 AMP): first-step (compile) time and steady rate.

Run it on an otherwise idle GPU; the first timed call of each setting follows warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

LIMITS = {"forward": 150, "mac": 150, "train": 90, "compile": 120}  # seconds per part
# GPU_BENCH_SMOKE=1 runs every part on the CPU with tiny settings: a check of this script, not a benchmark
SMOKE = os.environ.get("GPU_BENCH_SMOKE") == "1"
DEVICE = torch.device("cpu" if SMOKE else "cuda")
BIG, SIZES, STEPS, PATCH = (("ram-swinir-small", (32,), 8, 16) if SMOKE
                            else ("ram-swinir", (256, 512), 200, 64))


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if DEVICE.type == "cuda" else float("nan")


def synced(fn):
    """``fn`` followed by a GPU synchronisation, so that ``median_time`` times the GPU work too."""

    def call():
        fn()
        sync()

    return call


def part_forward(emit, models: list[str] | None = None) -> None:
    from benchmarks.common import flop_counter, median_time
    from ramir import create_model
    from ramir.archs.common import straightforward_path

    dev = DEVICE
    print(f"{'model':<11} {'size':>4} {'path':<15} {'prec':<5} {'median ms':>10} {'GFLOP':>7} {'TFLOP/s':>8} "
          f"{'GPU MB':>7} {'max |diff|':>10}")
    for name in models or ((BIG, "promptir", "nafnet-s") if not SMOKE else (BIG, "nafnet-s")):
        torch.manual_seed(0)
        net = create_model(name).eval().to(dev)
        for size in SIZES:
            x = torch.randn(1, 3, size, size, device=dev)
            with torch.inference_mode():
                counter = flop_counter()
                with counter:
                    reference = net(x)
                flops = counter.get_total_flops()
                rows = [("fast", "fp32", False, None), ("straightforward", "fp32", True, None),
                        ("fast", "bf16", False, torch.bfloat16)]
                medians = {}
                for path, prec, slow, dtype in rows:
                    reset_peak()

                    def run(slow=slow, dtype=dtype, net=net, x=x):
                        cast = torch.autocast(dev.type, dtype=dtype or torch.float32,
                                              enabled=dtype is not None)
                        with straightforward_path(slow), cast:
                            return net(x)

                    y = run()
                    diff = float((y.float() - reference).abs().max())
                    med, times = median_time(synced(run), repeats=3 if slow else 7, warmup=1 if slow else 2)
                    medians[(path, prec)] = med
                    gpu_mb = peak_mb()
                    print(f"{name:<11} {size:>4} {path:<15} {prec:<5} {1e3 * med:>10.2f} {flops / 1e9:>7.1f} "
                          f"{flops / med / 1e12:>8.2f} {gpu_mb:>7.0f} {diff:>10.2e}", flush=True)
                    emit({"part": "forward", "model": name, "size": size, "path": path, "precision": prec,
                          "median_s": med, "times_s": times, "gflop": flops / 1e9, "gpu_mb": gpu_mb,
                          "max_abs_diff_vs_fp32_fast": diff})
                ratio = medians[("straightforward", "fp32")] / medians[("fast", "fp32")]
                bf16 = medians[("fast", "fp32")] / medians[("fast", "bf16")]
                print(f"  -> {name} {size}: fast {ratio:.2f}x the straightforward (fp32); "
                      f"bf16 {bf16:.2f}x fp32", flush=True)
        del net
        reset_peak()


def part_mac(emit) -> None:
    from benchmarks.mac_bench import compare, test_image
    from ramir import create_model
    from ramir.mac import layer_output_bytes, mac_scores

    dev = DEVICE
    torch.manual_seed(0)
    model = create_model(BIG).eval().to(dev)
    x = test_image(64, 0)
    per_point = layer_output_bytes(model, x.to(dev))
    free, total = torch.cuda.mem_get_info() if dev.type == "cuda" else (8 * 2**30, 8 * 2**30)
    print(f"{BIG}, T={STEPS}, one 64x64 image; hooked outputs {per_point / 2**20:.0f} MiB per path point; "
          f"GPU free {free / 2**30:.0f} of {total / 2**30:.0f} GiB", flush=True)

    def scores(batch_steps: int | None, steps: int = STEPS) -> tuple[float, dict]:
        sync()
        t0 = time.perf_counter()
        s = mac_scores(model, x, steps=steps, batch_steps=batch_steps,
                       generator=torch.Generator().manual_seed(0))
        sync()
        return time.perf_counter() - t0, s

    scores(None, steps=4)  # warm-up: CUDA context, kernels, allocator
    scores(8, steps=8)
    print(f"{'batch_steps':>11} {'s/image':>8} {'speed-up':>8} {'GPU MB':>7} {'max rel diff':>12}  ranking",
          flush=True)
    reset_peak()
    base_s, base = scores(None)
    gpu_mb = peak_mb()
    print(f"{1:>11} {base_s:>8.2f} {1.0:>8.2f} {gpu_mb:>7.0f}", flush=True)
    emit({"part": "mac", "batch_steps": 1, "seconds_per_image": base_s, "gpu_mb": gpu_mb, "scores": base})
    for b in (8, 16, 32, 64, 100) if not SMOKE else (4, 8):
        if 3 * b * per_point > 0.8 * free:
            print(f"{b:>11} skipped: about {3 * b * per_point / 2**30:.0f} GiB needed", flush=True)
            continue
        reset_peak()
        try:
            secs, s = scores(b)
        except torch.cuda.OutOfMemoryError:
            print(f"{b:>11} out of GPU memory", flush=True)
            break
        gpu_mb = peak_mb()
        rel, same, why = compare(base, s)
        print(f"{b:>11} {secs:>8.2f} {base_s / secs:>8.2f} {gpu_mb:>7.0f} {rel:>12.2g}  "
              f"{'identical' if same else 'DIFFERS'} {why}", flush=True)
        emit({"part": "mac", "batch_steps": b, "seconds_per_image": secs, "speedup": base_s / secs,
              "gpu_mb": gpu_mb, "max_rel_diff": rel, "identical_ranking": same, "why": why})


def _train(emit, settings: list[tuple[str, bool, bool, int]], iterations: int, warmup: int) -> None:
    from benchmarks.train_bench import bench_recipe, bench_trainer, timed_steps
    from ramir.archs import create_model
    from ramir.training.stages import PretrainStage

    print(f"{'batch':>5} {'amp':<5} {'ch_last':<7} {'compile':<7} {'it/s':>7} {'img/s':>7} "
          f"{'first it s':>10} {'GPU MB':>7}", flush=True)
    for amp, channels_last, compiled, batch_size in settings:
        recipe = bench_recipe("pretrain", batch_size, warmup + iterations, device=DEVICE.type, amp=amp,
                              channels_last=channels_last, compile=compiled)
        torch.manual_seed(0)
        model = create_model(BIG)
        stage = PretrainStage(recipe.mask.ratio, recipe.mask.patch, recipe.mask.per_sample)
        with (bench_trainer(recipe, model, stage, PATCH) as trainer,
              warnings.catch_warnings(record=True) as caught):
            warnings.simplefilter("always")
            reset_peak()
            # the step alone, synchronised: drawing the batch is not counted here (it is on the CPU)
            times = timed_steps(trainer, warmup + iterations, count_batch_drawing=False, sync=sync)
        # the engine warns when torch.compile fails on the first step and it trains eagerly instead
        fell_back = compiled and any("torch.compile failed" in str(w.message) for w in caught)
        steady = times[warmup:]
        gpu_mb = peak_mb()
        rate = len(steady) / sum(steady)
        note = " (compile failed: eager)" if fell_back else ""
        print(f"{batch_size:>5} {amp:<5} {channels_last!s:<7} {compiled!s:<7} {rate:>7.2f} "
              f"{rate * batch_size:>7.1f} {times[0]:>10.2f} {gpu_mb:>7.0f}{note}", flush=True)
        emit({"part": "compile" if compiled else "train", "model": BIG, "batch": batch_size, "patch": PATCH,
              "amp": amp, "channels_last": channels_last, "compile": compiled, "compile_fell_back": fell_back,
              "it_per_s": rate, "first_it_s": times[0], "times_s": times, "gpu_mb": gpu_mb})
        del trainer, model
        reset_peak()


def part_train(emit) -> None:
    _train(emit, [("none", False, False, 4), ("bf16", False, False, 4), ("bf16", True, False, 4),
                  ("none", False, False, 32), ("bf16", False, False, 32)],
           iterations=2 if SMOKE else 20, warmup=1 if SMOKE else 3)


def part_compile(emit) -> None:
    _train(emit, [("bf16", False, True, 4)], iterations=2 if SMOKE else 20, warmup=2)


PARTS = {"forward": part_forward, "mac": part_mac, "train": part_train, "compile": part_compile}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_bench"))
    p.add_argument("--limit", nargs="+", default=[], metavar="PART=S", help="time limits, e.g. compile=200")
    p.add_argument("--models", nargs="+", help="networks of the forward part (default: all three)")
    p.add_argument("--child", choices=list(PARTS), help="(internal) run one part in this process")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_bench.jsonl"

    if args.child:
        if not SMOKE and not torch.cuda.is_available():
            sys.exit("gpu_bench: no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32; bf16 is measured separately
        torch.backends.cudnn.allow_tf32 = False

        def emit(record: dict) -> None:
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")

        if args.child == "forward":
            part_forward(emit, args.models)
        else:
            PARTS[args.child](emit)
        return

    limits = LIMITS | {k: int(v) for k, v in (item.split("=", 1) for item in args.limit)}
    from benchmarks.common import describe_machine

    print(describe_machine())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    for part in args.parts:
        print(f"\n## {part}", flush=True)
        t0 = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_bench", "--out", str(out),
                                  "--child", part, *(["--models", *args.models] if args.models else [])],
                                 timeout=limits[part], check=False)
            status = f"exit {run.returncode}"
        except subprocess.TimeoutExpired:
            status = f"stopped at its {limits[part]} s limit"
        print(f"({part}: {status}, {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
