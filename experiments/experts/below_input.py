"""Per task: a model's mean PSNR against the input's, and how many images end below their input.

    python experiments/experts/below_input.py runs/eval/valc_shipped runs/eval/valc_k2 [...]

Reads the ``per_image.csv`` of ``ramir evaluate`` outputs (reference-protocol PSNR); the input rows may
come from any of the folders (degradations are deterministic per image), the model rows from each.
Prints one Markdown table: task, input, then per model "mean (gain) below/total" (for clean photos:
the lowest PSNR and how many were changed at all).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="output folders of `ramir evaluate`")
    folders = parser.parse_args(argv).folders
    missing = [f for f in folders if not (Path(f) / "per_image.csv").is_file()]
    if missing:
        parser.error(f"no per_image.csv in {', '.join(missing)}")
    inputs: dict[tuple[str, str], float] = {}
    models: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for folder in folders:
        with open(Path(folder) / "per_image.csv", newline="") as f:
            for row in csv.DictReader(f):
                key = (row["task"], row["image"])
                value = float(row["psnr_reference"])
                if row["method"] == "input":
                    inputs[key] = value
                else:
                    models[row["method"]][key] = value
    tasks = list(dict.fromkeys(t for t, _ in inputs))  # in the order the folders list them
    names = list(models)
    print("| task | input | " + " | ".join(f"{m}: PSNR (gain) below/n" for m in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for task in tasks:
        keys = [k for k in inputs if k[0] == task]
        base = sum(inputs[k] for k in keys) / len(keys)
        if base == float("inf"):  # clean photos: how many were changed, and the lowest PSNR left
            cells = []
            for m in names:
                vals = [models[m][k] for k in keys if k in models[m]]
                changed = sum(v != float("inf") for v in vals)
                cells.append(f"lowest {min(vals):.1f} dB, {changed}/{len(vals)} changed" if vals else "—")
            print(f"| {task} | clean | " + " | ".join(cells) + " |")
            continue
        cells = []
        for m in names:
            got = [k for k in keys if k in models[m]]
            if not got:
                cells.append("—")
                continue
            mean = sum(models[m][k] for k in got) / len(got)
            below = sum(models[m][k] < inputs[k] - 1e-6 for k in got)
            cells.append(f"{mean:.2f} ({mean - base:+.2f}) {below}/{len(got)}")
        print(f"| {task} | {base:.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
