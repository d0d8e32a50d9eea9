"""Each expert of a routed model as trained and in its inference form (``ramir.archs.fold_for_inference``),
timed on one 1-megapixel image, onnxruntime and (``--torch``) eager PyTorch, in one run.

    python -m benchmarks.fold_speed --threads 2 [--model CKPT] [--experts noise,deblur] [--torch]

Both graphs of an expert are exported to a temporary folder and run alternately, ``--repeats`` times after a
warm-up, so the ratio is measured under the same conditions; the table gives the median seconds, the
ratio, and the largest difference between the two outputs ([0, 1] scale). Benchmark an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from benchmarks.common import alternating_times, describe_machine
    from ramir.archs import fold_for_inference
    from ramir.export import export_onnx
    from ramir.imagespace import ImageSpaceModel
    from ramir.inference import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a routed checkpoint (default: the embedded model)")
    ap.add_argument("--experts", default="", help="comma-separated expert names (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="also time eager PyTorch (slower)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    network = load(args.model, device="cpu", backend="torch").network
    names = [n for n in network.expert_names if not args.experts or n in args.experts.split(",")]
    x = np.random.default_rng(0).random((1, 3, args.side, args.side), dtype=np.float32)
    print(describe_machine())
    print(f"{args.side}x{args.side}, {args.threads} threads, median of {args.repeats} after a warm-up")
    print("| expert | backend | as trained (s) | inference form (s) | ratio | max difference |")
    print("|---|---|---|---|---|---|")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            expert = network.expert_module(network.expert_names.index(name)).float().eval()
            sessions = {}
            for fold in (False, True):
                path = Path(tmp) / f"{name}_{int(fold)}.onnx"
                export_onnx(expert, path, tile=64, dynamic=True, fold=fold)
                sessions[fold] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            outs = {fold: s.run(None, {"image": x})[0] for fold, s in sessions.items()}  # warm-up
            runs = {fold: (lambda s=s: s.run(None, {"image": x})) for fold, s in sessions.items()}
            times = alternating_times(runs, args.repeats)
            a, b = statistics.median(times[False]), statistics.median(times[True])
            diff = float(np.abs(outs[True] - outs[False]).max())
            print(f"| {name} | onnxruntime | {a:.3f} | {b:.3f} | {a / b:.2f} | {diff:.1e} |")
            if args.torch:
                models = {False: ImageSpaceModel(expert).eval(),
                          True: ImageSpaceModel(fold_for_inference(expert)).eval()}
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    res = {fold: m(xt) for fold, m in models.items()}  # warm-up
                    runs = {fold: (lambda m=m, xt=xt: m(xt)) for fold, m in models.items()}
                    times = alternating_times(runs, args.repeats)
                a, b = statistics.median(times[False]), statistics.median(times[True])
                diff = float((res[True] - res[False]).abs().max())
                print(f"| {name} | torch | {a:.3f} | {b:.3f} | {a / b:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
