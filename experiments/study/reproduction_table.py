"""Collect ``ramir evaluate`` results of several runs into the tables of docs/reproduction.md.

    python -m experiments.study.reproduction_table runs/eval/study_*_default_model runs/eval/study_*_ood \
        --order input plain mac10 random10 ig10 full100

Each argument is an evaluate output folder (its results.json); methods with the same label across
folders are merged. Prints Markdown: PSNR (reference protocol) per task, the in-distribution average and
the out-of-distribution average (tasks named in --ood).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OOD_DEFAULT = ("cbsd68-poisson4", "cbsd68-speckle0.2", "cbsd68-sp0.05")


def collect(folders: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """{method: {task: PSNR (reference protocol)}} and the task order as first seen."""
    table: dict[str, dict[str, float]] = {}
    tasks: list[str] = []
    for folder in folders:
        results = json.loads((Path(folder) / "results.json").read_text())
        for task, methods in results["summary"].items():
            if task not in tasks:
                tasks.append(task)
            for method, row in methods.items():
                table.setdefault(method, {})[task] = row["psnr_reference"]
    return table, tasks


def tuned_fraction(checkpoint: str) -> tuple[int, int, float]:
    """(layers tuned, layers in all, fraction of parameters) of a fine-tuned ramir checkpoint."""
    from ramir.checkpoints import load_network, read_header
    from ramir.layers import attributable_layers

    meta = json.loads(read_header(checkpoint).get("provenance", "{}"))
    tuned = set(meta.get("finetuned_layers", []))
    net = load_network(checkpoint)
    layers = attributable_layers(net)
    owned = {n: sum(p.numel() for p in net.get_submodule(n).parameters(recurse=False)) for n in layers}
    return len(tuned), len(layers), sum(owned[n] for n in tuned) / sum(owned.values())


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--order", nargs="+", help="method labels in row order (default: as found)")
    p.add_argument("--ood", nargs="+", default=list(OOD_DEFAULT), help="out-of-distribution task names")
    p.add_argument("--tuned", nargs="+", default=[], metavar="LABEL=CKPT",
                   help="also print the layers / parameters each fine-tuned checkpoint trained")
    args = p.parse_args()

    for item in args.tuned:
        label, ckpt = item.split("=", 1)
        n, total, frac = tuned_fraction(ckpt)
        print(f"{label}: {n} of {total} layers tuned, {100 * frac:.1f}% of the parameters")

    table, tasks = collect(args.folders)
    methods = args.order or list(table)
    ind = [t for t in tasks if t not in args.ood]
    ood = [t for t in tasks if t in args.ood]
    head = ["method", *tasks, "in-dist. avg", "OOD avg"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in methods:
        row = table.get(m, {})
        cells = [f"{row[t]:.2f}" if t in row else "—" for t in tasks]
        # an average only over complete rows: a missing task must not flatter a method
        avg_in = mean([row[t] for t in ind]) if all(t in row for t in ind) else float("nan")
        avg_ood = mean([row[t] for t in ood]) if ood and all(t in row for t in ood) else float("nan")
        print(f"| {m} | " + " | ".join(cells) + f" | {avg_in:.2f} | {avg_ood:.2f} |")


if __name__ == "__main__":
    main()
