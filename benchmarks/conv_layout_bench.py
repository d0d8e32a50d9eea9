"""An RSTB's closing 3x3 conv and residual sum on a one-image token map, in the two layouts PyTorch may see.

    python -m benchmarks.conv_layout_bench --size 512 --threads 1 --pairs 4

SwinIR keeps its features as (B, H*W, C) tokens and views them as a (B, C, H, W) image for the conv. The
reference's ``transpose(1, 2).view(...)`` gives that view a batch stride of C when B = 1, so PyTorch does
not recognise it as channels_last: it copies the map to NCHW, convolves in NCHW and returns NCHW, whose
token view is transposed for the residual sum. ``ramir.archs.swinir.tokens_to_image`` (fast path) views
it as channels_last instead. Both variants run alternately on the same weights and map; the ratio is
taken per pair.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--channels", type=int, default=180, help="180: the RAM-SwinIR reference config")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks.common import describe_machine
    from ramir.archs.common import straightforward_path
    from ramir.archs.swinir import image_to_tokens, tokens_to_image

    def literal_view(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        with straightforward_path():  # the reference's transpose().view(), as the slow path keeps it
            return tokens_to_image(tokens, size)

    torch.manual_seed(0)
    size, c = (args.size, args.size), args.channels
    conv = torch.nn.Conv2d(c, c, 3, 1, 1).eval()
    tokens = torch.randn(1, args.size * args.size, c)

    def rstb_tail(view) -> torch.Tensor:
        return image_to_tokens(conv(view(tokens, size))) + tokens

    times: dict[str, list[float]] = {"literal": [], "channels_last": []}
    with torch.inference_mode():
        diff = (rstb_tail(literal_view) - rstb_tail(tokens_to_image)).abs().max().item()
        for _ in range(args.pairs):
            for name, view in (("literal", literal_view), ("channels_last", tokens_to_image)):
                t0 = time.perf_counter()
                rstb_tail(view)
                times[name].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["literal"], times["channels_last"])]
    print(describe_machine())
    print(f"3x3 conv {c}->{c} + residual sum, 1x{c}x{args.size}x{args.size}, {args.threads} thread(s); "
          f"max abs difference of the outputs {diff:.1e}")
    for name, ts in times.items():
        print(f"{name:>14}: median {statistics.median(ts):.3f} s  ({' '.join(f'{t:.3f}' for t in ts)})")
    print(f"literal / channels_last: median of pairs {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
