"""How much the noise protocol moves CBM3D on CBSD68: clipped and 8-bit quantised noisy inputs (ramir and
the RAM reference) against float noise left unclipped (the protocol of the published CBM3D figures).

    python experiments/calibration/bm3d_noise_protocol.py --images ../shared/data/test/CBSD68 --sigma 25 -n 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir import metrics  # noqa: E402
from ramir.data.folders import list_images, read_rgb_float  # noqa: E402
from ramir.evaluation import bm3d_denoise, degrade, image_seed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("-n", type=int, default=12, help="first N images")
    args = ap.parse_args()
    import bm3d

    rows = []
    for path in list_images(args.images, recursive=False)[: args.n]:
        gt_u8 = metrics.quantize_u8(read_rgb_float(path))
        clean = gt_u8.astype(np.float32) / 255.0
        ours = bm3d_denoise(degrade(clean, "noise", args.sigma, image_seed(0, path.stem)), args.sigma)
        rng = np.random.RandomState(image_seed(0, path.stem))
        float_noisy = clean + rng.randn(*clean.shape).astype(np.float32) * args.sigma / 255.0
        unclipped = np.clip(bm3d.bm3d_rgb(float_noisy, args.sigma / 255.0), 0, 1)
        rows.append(
            (
                metrics.psnr(metrics.quantize_u8(ours), gt_u8),
                metrics.psnr(metrics.quantize_u8(unclipped), gt_u8),
            )
        )
        print(
            f"{path.name}: clipped+quantised {rows[-1][0]:.2f} dB, float unclipped {rows[-1][1]:.2f} dB",
            flush=True,
        )
    a, b = np.mean(rows, axis=0)
    print(
        f"mean over {len(rows)}: clipped+quantised {a:.2f} dB, float unclipped {b:.2f} dB, "
        f"difference {b - a:+.2f} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
