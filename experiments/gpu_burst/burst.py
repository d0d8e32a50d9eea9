"""The GPU burst: every expert of the routed default model through RAM and plain, at equal compute.

    python experiments/gpu_burst/pack_data.py            # here, once: .burst/data (49 MiB, git-ignored)
    # on the device (run tool, carry [".burst"]), about 8 minutes of device time in all:
    torchrun --standalone --nproc_per_node=1 experiments/gpu_burst/burst.py --minutes 5.5 --out $OUT
    # here, on the CPU: score what came back on the validation split
    ramir evaluate --suite configs/eval/validation.yaml --model ram=OUT/ram.safetensors \\
        --model plain=OUT/plain.safetensors --baseline input --tile 0 --out runs/eval/val_burst

The recipes are the CPU ones of ``experiments/experts/`` (same mix per expert, same loss, same
schedule shape), with their data roots pointed at the packed data and the GPU settings of
:data:`GPU_SETTINGS`: one ``torchrun`` process with ``train.ddp: always`` (so NCCL and the DDP wrapper
run on the GPU as in a many-GPU run), bf16 autocast, batch 32 of 128x128, degradations in 14 data-loader
workers on the machine's CPU cores. The budget is spent as measured, not guessed: a short probe of a
pre-training step gives the rate, then each expert gets its share (noise and deblur 6, the others 4, as
on the CPU) of half the time left for RAM (pre-training 60 %, MAC, fine-tuning 40 %) and half for plain
paired training of as many iterations. The router is the shipped model's (trained on the CPU), so
the two outputs differ only in how their experts were trained: ``ram.safetensors`` and
``plain.safetensors`` (routed checkpoints, about 9 MiB each), ``burst.json`` (iterations, rates,
seconds per stage). ``--smoke`` runs every step on the CPU with tiny settings (the test suite does):
it checks the script, it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXPERTS_DIR = ROOT / "experiments" / "experts"
sys.path.insert(0, str(ROOT / "src"))

from ramir.training import load_recipe, train  # noqa: E402

EXPERT_SHARES = {"noise": 6, "deblur": 6, "jpeg": 4, "rain": 4, "tone": 4}
GPU_SETTINGS = [
    "train.device=cuda",
    "train.amp=bf16",
    "train.ddp=always",
    "train.workers=14",
    "train.batch_size=32",
    "data.train.patch_size=128",
    "data.train.samples_per_epoch=64000",
    "train.threads=0",
    "train.save_every=0",
    "train.keep_last=1",
]
SMOKE_SETTINGS = [  # CPU: tiny batches, no workers, no bf16 (CPU autocast is slow), one thread
    "train.device=cpu",
    "train.amp=none",
    "train.ddp=always",
    "train.workers=0",
    "train.batch_size=2",
    "data.train.patch_size=32",
    "train.threads=1",
    "train.save_every=0",
    "train.keep_last=1",
]
# how the expert recipes name the data, and what pack_data.py calls it
DATA_NAMES = {
    "../../../shared/data/train/BSDS432": "BSDS432_train",
    "../../../shared/data/train/Rain100H_1-70": "Rain100H_train",
    "../../../shared/data/kernels/Levin09.mat": "kernels/Levin09.mat",
}


def materialise_recipes(data: Path, into: Path) -> Path:
    """Copies of the expert recipes whose data roots and split lists are absolute paths into ``data``."""
    into.mkdir(parents=True, exist_ok=True)
    for recipe in EXPERTS_DIR.glob("*.yaml"):
        text = recipe.read_text()
        for old, new in DATA_NAMES.items():
            text = text.replace(old, str((data / new).resolve()))
        text = text.replace("../../configs/splits/", str(ROOT / "configs" / "splits") + "/")
        (into / recipe.name).write_text(text)
    return into


def run_stage(recipe_file: Path, out: Path, iterations: int, settings: list[str]) -> tuple[Path, float]:
    """Train one stage to ``out``; returns the final checkpoint and the seconds it took."""
    recipe = load_recipe(
        recipe_file,
        [
            *settings,
            f"schedule.iterations={iterations}",
            f"schedule.warmup={max(1, iterations // 30)}",
            f"output_dir={out}",
        ],
    )
    start = time.perf_counter()
    result = train(recipe, resume="never" if not out.exists() else "auto", progress=False)
    if result.final is None:
        raise SystemExit(f"{recipe_file.name}: stopped at iteration {result.iteration}")
    return Path(result.final), time.perf_counter() - start


def ram_expert(
    recipes: Path, work: Path, name: str, iterations: int, settings: list[str], smoke: bool, report: dict
) -> Path:
    """Pre-training (60 %), MAC ranking on the GPU, fine-tuning of the top 30 % (40 %)."""
    from ramir.cli import main as ramir_cli

    pre_its = max(2, int(0.6 * iterations))
    pre_final, pre_s = run_stage(
        recipes / f"{name}_pretrain.yaml", work / f"{name}_pretrain", pre_its, settings
    )
    ranking = work / f"{name}_ranking_mac.json"
    start = time.perf_counter()
    mac_args = [
        "mac",
        str(pre_final),
        "--config",
        str(recipes / f"{name}_pretrain.yaml"),
        "--quiet",
        "--out",
        str(ranking),
        "--per-source",
        "1" if smoke else "10",
        "--steps",
        "4" if smoke else "200",
        "--size",
        "32" if smoke else "64",
        "--device",
        "cpu" if smoke else "auto",
    ]
    if ramir_cli(mac_args) != 0:
        raise SystemExit(f"burst: the MAC ranking of {name} failed")
    mac_s = time.perf_counter() - start
    ft_final, ft_s = run_stage(
        recipes / f"{name}_finetune.yaml",
        work / f"{name}_finetune",
        max(2, iterations - pre_its),
        [*settings, f"init_from={pre_final}", f"finetune.ranking={ranking}"],
    )
    report[name] = {"ram_iterations": iterations, "pretrain_s": pre_s, "mac_s": mac_s, "finetune_s": ft_s}
    return ft_final


def main() -> int:
    ap = argparse.ArgumentParser(
        description="the routed model's experts by RAM and by plain training, one GPU"
    )
    ap.add_argument("--minutes", type=float, default=5.5, help="training budget of this command (5.5)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu_burst")))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_burst_work", help="checkpoints")
    ap.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override for every stage, e.g. --set train.batch_size=64",
    )
    ap.add_argument("--data", type=Path, default=ROOT / ".burst" / "data", help="pack_data.py's output")
    ap.add_argument(
        "--router-from",
        type=Path,
        default=ROOT / "src" / "ramir" / "weights" / "default.safetensors",
        help="the routed checkpoint whose router (and classes) the outputs keep",
    )
    ap.add_argument("--probe", type=int, default=60, help="pre-training iterations timed first (60)")
    ap.add_argument("--max-iterations", type=int, default=None, help="cap on the iterations per expert")
    ap.add_argument("--smoke", action="store_true", help="CPU check of this script with tiny settings")
    args = ap.parse_args()
    settings = [*(SMOKE_SETTINGS if args.smoke else GPU_SETTINGS), *args.settings]
    budget = args.minutes * 60.0
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work.exists():
        shutil.rmtree(args.work)
    recipes = materialise_recipes(args.data, args.work / "recipes")
    import torch
    import torch.distributed as dist

    from ramir.checkpoints import load_network, save_checkpoint
    from ramir.training.router import assemble

    shipped = load_network(args.router_from)  # fail before any training if the router cannot be read
    if not hasattr(shipped, "router"):
        raise SystemExit(f"{args.router_from} is not a routed network; --router-from needs one")
    if "RANK" in os.environ and not dist.is_initialized():  # under torchrun: one group for every stage
        dist.init_process_group("cpu:gloo" if args.smoke or not torch.cuda.is_available() else "nccl")
    report: dict = {
        "settings": settings,
        "budget_s": budget,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu",
        "torch": torch.__version__,
        "experts": {},
    }

    # 1. the rate of a pre-training step, start-up included (so the plan errs on the short side)
    _, probe_s = run_stage(recipes / "noise_pretrain.yaml", args.work / "probe", args.probe, settings)
    rate = args.probe / probe_s
    left = budget - (time.perf_counter() - t0)
    mac_reserve = (2.0 if args.smoke else 15.0) * len(EXPERT_SHARES)
    per_chain = max(4 * len(EXPERT_SHARES), int(rate * (left - mac_reserve) / 2))
    shares = sum(EXPERT_SHARES.values())
    iterations = {e: max(4, per_chain * s // shares) for e, s in EXPERT_SHARES.items()}
    if args.max_iterations is not None:
        iterations = {e: min(n, max(4, args.max_iterations)) for e, n in iterations.items()}
    report.update(probe_iterations=args.probe, probe_s=probe_s, rate_it_s=rate, iterations=iterations)
    print(f"burst: {rate:.1f} it/s in the probe; iterations per expert and chain: {iterations}", flush=True)

    finals: dict[str, dict[str, Path]] = {"ram": {}, "plain": {}}
    for name in EXPERT_SHARES:  # 2. RAM, expert by expert
        finals["ram"][name] = ram_expert(
            recipes, args.work, name, iterations[name], settings, args.smoke, report["experts"]
        )
    for name in EXPERT_SHARES:  # 3. the control: plain paired training, as many iterations
        finals["plain"][name], seconds = run_stage(
            recipes / f"{name}_plain.yaml", args.work / f"{name}_plain", iterations[name], settings
        )
        report["experts"][name]["plain_s"] = seconds

    for chain, paths in finals.items():
        net = assemble(
            shipped.router,
            shipped.classes,
            shipped.class_to_expert,
            {e: paths[e] for e in shipped.expert_names},
            route_size=shipped.route_size,
            keep_threshold=shipped.keep_threshold,
        )
        save_checkpoint(
            args.out / f"{chain}.safetensors",
            net,
            stage="routed",
            metadata={"chain": chain, "burst": {k: v for k, v in report.items() if k != "settings"}},
        )
    report["total_s"] = time.perf_counter() - t0
    (args.out / "burst.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
