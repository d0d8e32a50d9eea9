"""A routed model's first decisions on every validation task, counted against the expert each task needs.

    python experiments/experts/router_decisions.py MODEL --out runs/logits_LABEL.json
    python experiments/experts/router_decisions.py --logits runs/logits_LABEL.json --bias motion=-1 ...
    python experiments/experts/router_decisions.py --logits runs/logits_LABEL.json --scale-threshold 0.8 \
        --second-look

The first form runs the router once over the three validation splits (composite, unseen-variant,
ordinary) and stores its logits per image; the second replays priors (``class_bias``) on stored logits,
cheaply, and prints the images whose first step would go to an expert the task does not need. Only the
first step is judged: a chain's later steps depend on the experts' outputs (``chain_steps.py``). The
large-photo split (``configs/eval/validation_large.yaml``) is recorded too, its clean photos judged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

SUITES = ["validation_composite", "validation_unseen", "validation", "validation_large"]
# the experts a task's first step may go to (composites: either of their two); clean photos are not judged
NEEDS = {
    "valc-noise-jpeg": "noise|jpeg", "valc-blur-noise": "noise|deblur", "valc-haze-noise": "noise|tone",
    "valc-motion-jpeg": "deblur", "valc-rain-jpeg": "rain", "valc-lowlight-noise": "tone|noise",
    "valu-shake": "deblur", "valu-levin": "deblur", "valu-ggblur": "deblur", "valu-spatialnoise": "noise",
    "valu-camnoise": "noise|jpeg", "valu-jpeg": "jpeg", "valu-impulse": "noise", "valu-haze": "tone",
    "valu-lowlight": "tone",
    "val-noise15": "noise", "val-noise25": "noise", "val-noise50": "noise", "val-blur2": "deblur",
    "val-jpeg20": "jpeg", "val-jpeg50": "jpeg", "val-motion": "deblur", "val-haze": "tone",
    "val-lowlight": "tone", "val-rain": "rain", "val-rainlight": "rain", "val-rain100h": "rain",
    "val-raintransfer": "rain", "val-rainfaint": "rain", "val-hazelight": "tone",
    # enlarged photos (validation_large.yaml): soft at the pixel level is not blurred; the noise expert
    # forced leaves an enlarged clean photo at 52.5 dB, the seventh-cycle model (mostly deblurring) at 30.0
    "vall-camnoise": "noise", "vall-noise15": "noise", "vall-jpeg40": "jpeg|noise|keep",
    "vall-motion": "deblur", "vall-clean": "keep|noise|jpeg",
}


def record(model: Path, out: Path) -> None:
    from ramir import evaluation as ev
    from ramir.archs.routed import centre_crop, second_look
    from ramir.checkpoints import load_network
    from ramir.imagespace import normalize

    torch.set_num_threads(1)
    net = load_network(model)
    logits: dict[str, list[list[float]]] = {}
    small: dict[str, list[list[float] | None]] = {}  # the second look's logits of large photos
    side = int(getattr(net, "scale_check", 0)) or 321
    for suite in SUITES:
        for task in ev.load_suite(ROOT / "configs" / "eval" / f"{suite}.yaml").tasks:
            rows, rows_small = [], []
            for s in ev.iter_samples(task):
                x = normalize(torch.from_numpy(s.lq).permute(2, 0, 1)[None])
                with torch.no_grad():
                    rows.append(net.router(centre_crop(x, net.route_size))[0].tolist())
                    if min(x.shape[-2:]) >= 2 * side:
                        y = torch.from_numpy(second_look(x.numpy(), side))
                        rows_small.append(net.router(centre_crop(y, net.route_size))[0].tolist())
                    else:
                        rows_small.append(None)
            logits[task.name], small[task.name] = rows, rows_small
    experts = [("keep" if i < 0 else net.expert_names[i]) for i in net.class_to_expert]
    out.write_text(json.dumps({"model": str(model), "classes": net.classes, "experts": experts,
                               "class_bias": net.class_bias, "keep_threshold": net.keep_threshold,
                               "doubt_experts": getattr(net, "doubt_experts", None),
                               "scale_check": side, "scale_classes": getattr(net, "scale_classes", None)
                               or ["blur", "motion"], "logits": logits, "small": small}))
    print(f"{out}: {sum(map(len, logits.values()))} images")


def replay(data: dict, bias: dict[str, float], scale_threshold: float | None = None) -> dict[str, int]:
    """Wrong first steps per task under ``bias``, with the model's keep rule (``choose_class``)
    and, given ``scale_threshold``, the second look of large photos (``RoutedNetwork.decide``)."""
    from ramir.archs.routed import choose_class, discount_scale

    classes, experts = data["classes"], data["experts"]
    class_expert = [None if e == "keep" else e for e in experts]
    b = torch.tensor([bias.get(c, 0.0) for c in classes])
    struck = [classes.index(c) for c in data.get("scale_classes") or []]
    wrong = {}
    for task, rows in data["logits"].items():
        if task not in NEEDS:
            continue
        n = 0
        for row, row_small in zip(rows, data.get("small", {}).get(task) or [None] * len(rows), strict=True):
            p = (torch.tensor(row) + b).softmax(0)
            if scale_threshold is not None and row_small is not None:
                q = (torch.tensor(row_small) + b).softmax(0)
                p = torch.tensor(discount_scale(p.tolist(), q.tolist(), struck, scale_threshold))
            k = choose_class(p.tolist(), class_expert, data["keep_threshold"], data.get("doubt_experts"))
            n += experts[k] not in NEEDS[task].split("|")
        if n:
            wrong[task] = n
    return wrong


def second_look_mass(data: dict, bias: dict[str, float]) -> dict[str, list[float]]:
    """Per task of large photos, the second look's probability of the scale classes together (blur and
    motion), sorted: where ``scale_threshold`` falls among the photos that need deblurring and those that
    do not."""
    classes = data["classes"]
    b = torch.tensor([bias.get(c, 0.0) for c in classes])
    idx = [classes.index(c) for c in data.get("scale_classes") or []]
    mass = {}
    for task, rows in (data.get("small") or {}).items():
        seen = [float((torch.tensor(r) + b).softmax(0)[idx].sum()) for r in rows if r is not None]
        if seen:
            mass[task] = sorted(round(v, 2) for v in seen)
    return mass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--logits", type=Path, help="replay stored logits instead of running a model")
    ap.add_argument("--bias", action="append", default=[], metavar="CLASS=LOGIT",
                    help="prior to replay, over the model's own (repeatable)")
    ap.add_argument("--scale-threshold", type=float, default=None,
                    help="replay the second look of large photos with this threshold (default: off)")
    ap.add_argument("--second-look", action="store_true",
                    help="also print, per task of large photos, the second look's blur and motion together")
    args = ap.parse_args(argv)
    if args.logits is None:
        if args.model is None or args.out is None:
            ap.error("give MODEL and --out, or --logits")
        record(args.model, args.out)
        return 0
    data = json.loads(args.logits.read_text())
    bias = dict(data["class_bias"])
    for text in args.bias:
        name, _, value = text.partition("=")
        bias[name] = float(value)
    wrong = replay(data, bias, args.scale_threshold)
    look = "" if args.scale_threshold is None else f", second look below {args.scale_threshold:g}"
    print(f"priors {json.dumps(bias)}{look}: {sum(wrong.values())} wrong first steps; {json.dumps(wrong)}")
    if args.second_look:
        for task, seen in second_look_mass(data, bias).items():
            print(f"{task}: second look, blur and motion together: {seen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
