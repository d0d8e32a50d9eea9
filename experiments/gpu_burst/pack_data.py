"""Pack the training images for a GPU burst into ``.burst/data`` (git-ignored; carried to the device).

    python experiments/gpu_burst/pack_data.py [--shared ../shared/data] [--out .burst/data]

The device tool carries at most 64 MiB beside the code, and the burst is given 60 MiB of data:
BSDS432 without the validation split (400 JPEGs, copied as they are) and Rain100H pairs 1-60 (the
validation split 61-70 left out) re-encoded as lossless WebP, which is about 30 % smaller than their
PNGs and decodes to the same pixels (checked here for every file). The Levin kernels come along.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir.data.folders import filter_by_names, list_images, read_name_list  # noqa: E402

LIMIT_BYTES = 60 * 2**20


def lossless_webp(src: Path, dst: Path) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
    if not ok or not np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), img):
        raise SystemExit(f"lossless WebP failed for {src}")
    dst.write_bytes(buf.tobytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / ".burst" / "data")
    args = ap.parse_args()
    splits = ROOT / "configs" / "splits"
    if args.out.exists():
        shutil.rmtree(args.out)
    bsds = args.out / "BSDS432_train"
    bsds.mkdir(parents=True)
    for p in filter_by_names(
        list_images(args.shared / "train" / "BSDS432"), exclude=read_name_list(splits / "bsds432_val.txt")
    ):
        shutil.copyfile(p, bsds / p.name)
    rain_val = read_name_list(splits / "rain100h_val.txt")
    for role in ("input", "target"):
        dst = args.out / "Rain100H_train" / role
        dst.mkdir(parents=True)
        for p in filter_by_names(
            list_images(args.shared / "train" / "Rain100H_1-70" / role), exclude=rain_val
        ):
            lossless_webp(p, dst / (p.stem + ".webp"))
    (args.out / "kernels").mkdir()
    shutil.copyfile(args.shared / "kernels" / "Levin09.mat", args.out / "kernels" / "Levin09.mat")
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {total / 2**20:.1f} MiB")
    if total > LIMIT_BYTES:
        print(f"over the burst's {LIMIT_BYTES / 2**20:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
