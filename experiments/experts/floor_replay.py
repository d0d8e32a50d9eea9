"""What ``doubt_floor`` would do to a routed model already evaluated, image by image, without a new run.

    python experiments/experts/floor_replay.py MODEL --floor 0.1 --label c13f \\
        runs/eval/valc_c13a runs/eval/valu_c13a runs/eval/val_c13a runs/eval/vall_c13a
    python experiments/experts/below_input.py runs/eval/val_c13a runs/eval/val_c13f   (likewise the rest)

The floor only acts on a photo's first step: where the router finds the photo most likely clean but not
surely (below ``keep_threshold``) and no expert's class reaches the floor, the photo is left unchanged.
At later steps it changes nothing the chain does (a fallback class there is below ``chain_threshold``:
the chain stops either way). So the model with the floor gives each such photo the input's PSNR and every
other photo the evaluated one, exactly. For each ``runs/eval/PREFIX_LABEL`` folder this writes
``runs/eval/PREFIX_<--label>/per_image.csv`` and prints the photos the floor leaves alone.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SUITES = ["validation_composite", "validation_unseen", "validation", "validation_large"]


def first_choices(net, lq, floors: tuple[float, ...]) -> list[str]:
    """The class the router chooses first for one image under each of ``floors``: its probabilities once
    (RoutedNetwork.decide, second look included), then the model's rule (choose_class) per floor."""
    from ramir.archs.routed import choose_class
    from ramir.imagespace import normalize

    with torch.no_grad():
        probs, _ = net.decide(normalize(torch.from_numpy(lq).permute(2, 0, 1)[None]))
    p, class_expert = probs[0].tolist(), [net.expert_for(c) for c in net.classes]
    keep, doubt = net.keep_threshold, net.doubt_experts
    return [net.classes[choose_class(p, class_expert, keep, doubt, f)] for f in floors]


def main(argv: list[str] | None = None) -> int:
    from ramir import evaluation as ev
    from ramir.checkpoints import load_network

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("folders", type=Path, nargs="+", help="ramir evaluate outputs of MODEL")
    ap.add_argument("--floor", type=float, required=True)
    ap.add_argument("--label", required=True, help="the method name (and folder suffix) written")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = load_network(args.model)
    tasks = {t.name: t for s in SUITES for t in ev.load_suite(ROOT / "configs" / "eval" / f"{s}.yaml").tasks}
    for folder in args.folders:
        with open(folder / "per_image.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        inputs = {(r["task"], r["image"]): r for r in rows if r["method"] == "input"}
        label = next(r["method"] for r in rows if r["method"] != "input")
        left = set()
        for name in dict.fromkeys(r["task"] for r in rows):
            for s in ev.iter_samples(tasks[name]):
                with_floor, without = first_choices(net, s.lq, (args.floor, 0.0))
                if with_floor != without and net.expert_for(with_floor) is None:
                    left.add((name, s.name))
                    print(f"{folder.name}: {name} {s.name} left unchanged")
        out = folder.with_name(folder.name.rsplit("_", 1)[0] + "_" + args.label)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                key = (r["task"], r["image"])
                if r["method"] == label:
                    r = dict(inputs[key], method=args.label) if key in left else dict(r, method=args.label)
                w.writerow(r)
        print(f"{out}/per_image.csv: {len(left)} photo(s) left unchanged by the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
