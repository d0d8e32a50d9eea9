"""Training throughput (iterations/s) and peak RSS of the engine on CPU, for 1 and 2 threads.

    python -m benchmarks.train_bench                          # the CPU recipe (ram-swinir-small, 4 x 48x48)
    python -m benchmarks.train_bench --model ram-swinir       # the paper's network, 4 x 64x64, 3 iterations
    python -m benchmarks.train_bench --stage finetune         # top-10% layers of a random ranking
    python -m benchmarks.train_bench --model ram-swinir --activation-checkpointing   # memory vs time

One full engine step each: data item, pixel mask, forward, backward, Adam, EMA update. The data are
seeded in-memory images (the recipe's folders are not needed), so the numbers measure the model and the
engine, not image decoding. Each thread count runs in a fresh process (its own peak RSS).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class SyntheticPairs(torch.utils.data.Dataset):
    """Smooth random images with Gaussian noise, a function of the index."""

    def __init__(self, size: int, n: int = 256) -> None:
        self.size, self.n = size, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        gt = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(self.size, self.size),
                                             mode="bicubic", align_corners=False)[0].clamp(0, 1)
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        return {"lq": lq, "gt": gt, "task": "noise"}


def bench_recipe(stage: str, batch: int, steps: int, **train_settings):
    """The CPU recipe ``configs/cpu_tiny_<stage>.yaml`` set to ``batch`` images and ``steps`` iterations.

    ``train_settings`` override fields of its ``train`` section (``amp``, ``channels_last``, ``device``, ...)
    through the recipe's own ``--set`` overrides, so keys and values are checked as in a user's run.
    """
    from ramir.training import load_recipe

    settings = {"batch_size": batch, "threads": 0, **train_settings}
    overrides = [f"train.{key}={json.dumps(value)}" for key, value in settings.items()]
    overrides.append(f"schedule.iterations={steps}")
    return load_recipe(ROOT / "configs" / f"cpu_tiny_{stage}.yaml", overrides)


@contextmanager
def bench_trainer(recipe, model: torch.nn.Module, stage, patch: int) -> Iterator:
    """A ``Trainer`` on :class:`SyntheticPairs` of ``patch`` pixels, writing into a scratch directory."""
    from ramir.training import Trainer

    with tempfile.TemporaryDirectory() as out:
        yield Trainer(recipe, model=model, stage=stage, train_set=SyntheticPairs(patch), output_dir=out,
                      resume="never", progress=False)


def timed_steps(trainer, steps: int, *, count_batch_drawing: bool = True,
                sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each of ``steps`` engine steps (mask, forward, backward, optimiser, EMA).

    ``count_batch_drawing`` includes drawing the batch from the loader, as the CPU figures always have
    (it is part of what a training run waits for); the GPU benchmark leaves it out and passes ``sync``
    (a device synchronisation) so that the clock stops when the GPU's work does.
    """
    batches = trainer.batches()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        if not count_batch_drawing:
            sync()
            t0 = time.perf_counter()
        trainer.train_step(batch)
        sync()
        trainer.iteration += 1
        times.append(time.perf_counter() - t0)
    return times


def measure(model_name: str, stage: str, batch: int, patch: int, iterations: int, warmup: int,
            checkpointing: bool = False, channels_last: bool = False) -> dict:
    from benchmarks.common import peak_rss_mb
    from ramir.archs import create_model
    from ramir.mac import random_scores
    from ramir.ranking import ranking_from_scores, select_layers
    from ramir.training.stages import FinetuneStage, PretrainStage

    recipe = bench_recipe(stage, batch, warmup + iterations,
                          activation_checkpointing=checkpointing, channels_last=channels_last)
    torch.manual_seed(0)
    model = create_model(model_name)
    if stage == "pretrain":
        stage_obj = PretrainStage(recipe.mask.ratio, recipe.mask.patch, recipe.mask.per_sample)
    else:
        ranking = ranking_from_scores(random_scores(model, seed=0))
        stage_obj = FinetuneStage(select_layers(ranking, 0.1))
    with bench_trainer(recipe, model, stage_obj, patch) as trainer:
        times = timed_steps(trainer, warmup + iterations)
    steady = times[warmup:]
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": model_name, "stage": stage, "batch": batch, "patch": patch, "iterations": iterations,
            "checkpointing": checkpointing, "channels_last": channels_last,
            "it_per_s": len(steady) / sum(steady), "s_per_it": sum(steady) / len(steady),
            "first_it_s": times[0], "params": params, "trainable": trainable, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ram-swinir-small", help="ram-swinir-small (CPU recipe) or ram-swinir")
    p.add_argument("--stage", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, help="default: 48 (CPU recipe) or 64 (ram-swinir)")
    p.add_argument("--iterations", type=int, help="timed iterations (default: 20, or 3 for ram-swinir)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute block activations in the backward pass (less memory, more time)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", action="store_true", help="(internal) measure one setting, print JSON")
    args = p.parse_args(argv)
    big = args.model != "ram-swinir-small"
    patch = args.patch or (64 if big else 48)
    iterations = args.iterations or (3 if big else 20)
    if args.json:
        torch.set_num_threads(args.threads[0])
        print(json.dumps(measure(args.model, args.stage, args.batch, patch, iterations, args.warmup,
                                 args.activation_checkpointing, args.channels_last)))
        return

    from benchmarks.common import describe_machine, run_isolated

    extras = [f for f, on in (("activation checkpointing", args.activation_checkpointing),
                              ("channels_last", args.channels_last)) if on]
    print(describe_machine())
    print(f"{args.model} {args.stage}, batch {args.batch} x "
          f"{patch}x{patch}, {iterations} timed iterations after {args.warmup} warm-up"
          + "".join(f"; {e}" for e in extras))
    print(f"{'threads':>7} {'it/s':>7} {'s/it':>7} {'first it s':>10} {'trainable':>16} {'peak RSS MB':>11}")
    for threads in args.threads:
        r = run_isolated("benchmarks.train_bench",
                         ["--model", args.model, "--stage", args.stage, "--batch", str(args.batch), "--patch",
                          str(patch), "--iterations", str(iterations), "--warmup", str(args.warmup)]
                         + ["--activation-checkpointing"] * args.activation_checkpointing
                         + ["--channels-last"] * args.channels_last, threads)
        share = f"{r['trainable']:,}/{r['params']:,}"
        print(f"{threads:>7} {r['it_per_s']:>7.2f} {r['s_per_it']:>7.3f} {r['first_it_s']:>10.3f} "
              f"{share:>16} {r['peak_rss_mb']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
