"""The training engine: recipes, schedule, EMA, exact resume, freezing, and DDP on two CPU processes.

The engine takes any nn.Module and any dataset of {"lq", "gt", "task"} items, so most tests use a toy
convolutional network and an in-memory dataset whose items are functions of their index.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ramir.errors import ConfigError
from ramir.layers import attributable_layers
from ramir.training import Trainer, load_recipe, recipe_from_dict
from ramir.training.config import apply_overrides, parse_override, read_recipe_dict
from ramir.training.ema import ModelEma
from ramir.training.engine import build_stage, list_states
from ramir.training.schedule import lr_at
from ramir.training.stages import FinetuneStage, PretrainStage

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


# --------------------------------------------------------------------------------------------------
# toy network and data (module level: the DDP test's spawned processes import them)


class Toy(nn.Module):
    """Four conv layers (8 parameters), optional dropout to exercise the per-step RNG, and a parameter
    the forward never uses (like SwinIR's ``mask_token``), which DDP without find_unused_parameters
    would wait for."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.drop = nn.Dropout(dropout)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.spare = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.drop(torch.relu(self.body(self.head(x)))))


def toy(dropout: float = 0.0) -> Toy:
    torch.manual_seed(1234)
    return Toy(dropout)


class NoisyImages(torch.utils.data.Dataset):
    """Smooth random images with Gaussian noise; item i depends on i only."""

    def __init__(self, n: int = 12, size: int = 16, sigma: float = 0.1, offset: int = 0) -> None:
        self.n, self.size, self.sigma, self.offset = n, size, sigma, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + self.offset + i)
        coarse = torch.rand(1, 3, 4, 4, generator=g)
        gt = nn.functional.interpolate(coarse, size=(self.size, self.size), mode="bilinear",
                                       align_corners=False)[0]
        lq = (gt + self.sigma * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        return {"lq": lq, "gt": gt, "task": "noise"}


def tiny_recipe(**sections) -> dict:
    recipe = {
        "name": "toy",
        "model": {"name": "toy"},
        "optim": {"lr": 1e-3},
        "schedule": {"iterations": 6, "warmup": 2, "eta_min": 1e-5},
        "ema": {"decay": 0.9},
        "train": {"batch_size": 2, "log_every": 1, "save_every": 0, "seed": 3},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def make_trainer(tmp: Path, recipe: dict, *, model=None, stage=None, **kw) -> Trainer:
    return Trainer(recipe_from_dict(recipe), model=model if model is not None else toy(), stage=stage,
                   train_set=kw.pop("train_set", NoisyImages()), output_dir=tmp, progress=False, **kw)


# --------------------------------------------------------------------------------------------------
# recipes


def test_unknown_keys_are_named_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*valid keys here: lr, betas, weight_decay"):
        recipe_from_dict(tiny_recipe(optim={"lrr": 1e-4}))
    with pytest.raises(ConfigError, match=r"unknown recipe key 'trian'"):
        recipe_from_dict({**tiny_recipe(), "trian": {}})


def test_types_choices_and_coercion():
    r = recipe_from_dict(tiny_recipe(optim={"lr": "2e-4"}, schedule={"iterations": 4e5}))
    assert r.optim.lr == 2e-4 and isinstance(r.optim.lr, float)  # YAML reads 2e-4 as a string
    assert r.schedule.iterations == 400000 and isinstance(r.schedule.iterations, int)
    with pytest.raises(ConfigError, match=re.escape("train.batch_size must be an integer")):
        recipe_from_dict(tiny_recipe(train={"batch_size": "four"}))
    with pytest.raises(ConfigError, match=re.escape("train.amp must be one of none, bf16, fp16")):
        recipe_from_dict(tiny_recipe(train={"amp": "fp8"}))
    with pytest.raises(ConfigError, match="stage must be one of"):
        recipe_from_dict(tiny_recipe(stage="pretraining"))
    with pytest.raises(ConfigError, match=re.escape("mask.per_sample must be true or false")):
        recipe_from_dict(tiny_recipe(mask={"per_sample": "yes"}))
    with pytest.raises(ConfigError, match="needs 'model'"):
        recipe_from_dict({"stage": "finetune"})
    # free-form sections stay free-form
    r = recipe_from_dict(tiny_recipe(model={"name": "ram-swinir-small", "overrides": {"embed_dim": 12}}))
    assert r.model.overrides == {"embed_dim": 12}


def test_overrides_and_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_recipe(data={"train": {"patch_size": 48}})))
    (tmp_path / "child.yaml").write_text(
        "_base_: base.yaml\nname: child\noptim: {betas: [0.8, 0.9]}\ndata: {train: {samples_per_epoch: 10}}\n"
    )
    r = load_recipe(tmp_path / "child.yaml", ["optim.lr=3e-4", "train.amp=bf16", "mask.ratio=0.25",
                                               "model.overrides.depths=[1, 1]"])
    assert r.name == "child" and r.optim.lr == 3e-4 and r.optim.betas == [0.8, 0.9]
    assert r.optim.weight_decay == 0.0 and r.train.amp == "bf16" and r.mask.ratio == 0.25
    assert r.data["train"] == {"patch_size": 48, "samples_per_epoch": 10}  # merged key by key
    assert r.model.overrides == {"depths": [1, 1]}
    assert parse_override("init_from=") == (["init_from"], None)
    with pytest.raises(ConfigError, match=re.escape("unknown recipe key 'optim.lrate'")):
        load_recipe(tmp_path / "child.yaml", ["optim.lrate=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match=re.escape("'optim.lr' is not a section")):
        apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr.x=1"])


def test_base_list_append_form(tmp_path):
    src = {"name": "a", "root": "photos"}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_recipe(data={"train": {"sources": [src]}})))
    (tmp_path / "child.yaml").write_text(
        "_base_: base.yaml\ndata: {train: {patch_size: 32, sources+: [{name: b, root: photos}]}}\n")
    r = load_recipe(tmp_path / "child.yaml")
    assert [s["name"] for s in r.data["train"]["sources"]] == ["a", "b"]
    assert r.data["train"]["patch_size"] == 32 and "sources+" not in r.data["train"]
    # a grandchild appends to what its parent resolved to; the base file itself is untouched
    (tmp_path / "grand.yaml").write_text("_base_: child.yaml\ndata: {train: {sources+: [{name: c}]}}\n")
    assert [s["name"] for s in read_recipe_dict(tmp_path / "grand.yaml")["data"]["train"]["sources"]] \
        == ["a", "b", "c"]
    assert [s["name"] for s in read_recipe_dict(tmp_path / "base.yaml")["data"]["train"]["sources"]] == ["a"]
    bad = {
        "both.yaml": ("data: {train: {sources: [], sources+: [{name: b}]}}", "sets both 'data.train"),
        "nolist.yaml": ("data: {train: {sources+: {name: b}}}", "'data.train.sources+' appends a list"),
        "nobase.yaml": ("data: {train: {extra+: [{name: b}]}}", "the base has no such list"),
    }
    for name, (body, message) in bad.items():
        (tmp_path / name).write_text(f"_base_: base.yaml\n{body}\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            read_recipe_dict(tmp_path / name)
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump(tiny_recipe(data={"train": {"sources+": [src]}})))
    with pytest.raises(ConfigError, match="the base has no such list"):
        load_recipe(tmp_path / "alone.yaml")


EXPERIMENTS = CONFIGS.parent / "experiments"


@pytest.mark.parametrize(
    "path",
    sorted(CONFIGS.glob("*.yaml")) + sorted(EXPERIMENTS.glob("*/*.yaml")),
    ids=lambda p: p.relative_to(CONFIGS.parent).as_posix(),
)
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert r.data.get("train")
    if path.name.startswith("ram_"):  # the paper's recipes
        assert r.stage in path.name
        assert r.train.batch_size * 8 in (32, 96)  # per-GPU batch of the paper's 8-GPU runs


def test_shipped_recipes_follow_the_paper():
    swin_pre = load_recipe(CONFIGS / "ram_swinir_pretrain.yaml")
    assert (swin_pre.train.batch_size, swin_pre.optim.lr, swin_pre.schedule.eta_min) == (12, 1e-4, 6e-5)
    assert (swin_pre.schedule.iterations, swin_pre.schedule.warmup) == (400_000, 10)
    assert (swin_pre.mask.ratio, swin_pre.mask.patch, swin_pre.ema.decay) == (0.5, 1, 0.995)
    prompt_pre = load_recipe(CONFIGS / "ram_promptir_pretrain.yaml")
    assert (prompt_pre.optim.lr, prompt_pre.schedule.eta_min) == (2e-4, 1e-6)
    assert (prompt_pre.schedule.iterations, prompt_pre.schedule.warmup) == (1_200_000, 40_000)
    assert (prompt_pre.train.batch_size, prompt_pre.data["train"]["patch_size"]) == (4, 128)
    for name, ratio in (("ram_swinir_finetune.yaml", 0.1), ("ram_promptir_finetune.yaml", 0.3)):
        ft = load_recipe(CONFIGS / name)
        assert (ft.finetune.ratio, ft.finetune.by, ft.finetune.init) == (ratio, "count", "raw")
        assert (ft.optim.lr, ft.optim.betas, ft.schedule.eta_min) == (2e-4, [0.9, 0.99], 1e-7)
        assert (ft.schedule.iterations, ft.schedule.warmup, ft.train.batch_size) == (160_000, 4_000, 4)


def test_finetune_recipes_start_where_their_pretraining_writes():
    """A fine-tuning recipe's ``init_from`` and ranking sit in its pre-training recipe's output folder."""
    checked = 0
    for path in sorted(CONFIGS.glob("*finetune.yaml")):
        ft = load_recipe(path)
        pre_dir = Path(ft.init_from).parent
        pre_path = CONFIGS / f"{pre_dir.name}.yaml"
        if not pre_path.is_file():
            continue
        assert pre_dir == load_recipe(pre_path).resolved_output_dir(), path.name
        assert Path(ft.finetune.ranking).parent == pre_dir, path.name
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("tasks,pre_its,ft_its", [(3, 1_080_000, 270_000), (5, 1_200_000, 200_000)])
def test_rampp_task_settings_change_only_data_and_iterations(tasks, pre_its, ft_its):
    """RAMPP_SPEC §b/§e: the 3- and 5-task runs are the 7-task recipes with their own data and length."""
    seven_pre = load_recipe(CONFIGS / "rampp_restormer_pretrain.yaml")
    seven_ft = load_recipe(CONFIGS / "rampp_rfr_finetune.yaml")
    pre = load_recipe(CONFIGS / f"rampp_{tasks}task_pretrain.yaml")
    ft = load_recipe(CONFIGS / f"rampp_{tasks}task_finetune.yaml")
    assert (pre.schedule.iterations, ft.schedule.iterations) == (pre_its, ft_its)
    for new, seven in ((pre, seven_pre), (ft, seven_ft)):
        assert (new.stage, new.model, new.mask, new.optim, new.ema, new.train) == (
            seven.stage, seven.model, seven.mask, seven.optim, seven.ema, seven.train)
        assert (new.schedule.warmup, new.schedule.eta_min) == (seven.schedule.warmup, seven.schedule.eta_min)
        assert len(new.data["train"]["sources"]) == tasks and new.data["train"]["patch_size"] == 128
    assert ft.finetune == dataclasses.replace(seven_ft.finetune, ranking=ft.finetune.ranking)
    assert ft.init_from == f"runs/rampp_{tasks}task_pretrain/final.safetensors"  # where stage 1 writes
    assert Path(ft.init_from).parent == pre.resolved_output_dir()


# --------------------------------------------------------------------------------------------------
# schedule and EMA


def test_warmup_then_cosine():
    kw = dict(base_lr=1e-3, iterations=100, warmup=10, eta_min=1e-5)
    assert [lr_at(i, **kw) for i in range(3)] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert lr_at(8, **kw) == pytest.approx(9e-4)
    cosine = [lr_at(i, **kw) for i in range(9, 101)]
    assert cosine[0] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 9 / 100)))
    assert all(a > b for a, b in itertools.pairwise(cosine))  # strictly decreasing to the end
    assert lr_at(50, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(100, **kw) == pytest.approx(1e-5) and lr_at(10**6, **kw) == pytest.approx(1e-5)
    assert lr_at(0, base_lr=1e-3, iterations=100) == pytest.approx(1e-3)  # no warm-up: starts at the base


def test_ema_averages_parameters_and_float_buffers():
    src = nn.BatchNorm2d(2)
    with torch.no_grad():
        src.weight.fill_(1.0)
        src.running_mean.fill_(0.0)
    ema = ModelEma(src, decay=0.9)
    with torch.no_grad():
        src.weight.fill_(3.0)
        src.running_mean.fill_(-1.0)
        src.num_batches_tracked.fill_(7)
    for _ in range(5):
        ema.update(src)
    state = ema.state_dict()
    # constant target p: ema_k = p + decay^k (ema_0 - p)
    assert torch.allclose(state["weight"], torch.full((2,), 3.0 + 0.9**5 * (1.0 - 3.0)))
    assert torch.allclose(state["running_mean"], torch.full((2,), -1.0 + 0.9**5 * (0.0 + 1.0)))
    assert int(state["num_batches_tracked"]) == 7  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())


# --------------------------------------------------------------------------------------------------
# the loop: masks, resume, interruption


def test_pretrain_masks_are_seeded_per_step_and_split_across_ranks():
    stage = PretrainStage(ratio=0.5, per_sample=True, seed=5)
    a, b = stage.masks(4, 9, 7, step=3), stage.masks(4, 9, 7, step=3)
    assert torch.equal(a, b) and not torch.equal(a, stage.masks(4, 9, 7, step=4))
    assert torch.all(a.sum(dim=(1, 2, 3)) == math.ceil(0.5 * 63))
    # rank r of 2 gets the masks of global positions r, r+2, ... (DistributedSampler's interleaving)
    r0, r1 = stage.masks(2, 9, 7, step=3, rank=0, world=2), stage.masks(2, 9, 7, step=3, rank=1, world=2)
    assert torch.equal(r0, a[0::2]) and torch.equal(r1, a[1::2])
    shared = PretrainStage(ratio=0.5, seed=5).masks(3, 9, 7, step=0)
    assert torch.equal(shared[0], shared[2])  # the reference: one mask for the whole batch


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _assert_same(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=0), k


class SignalAtStep(PretrainStage):
    """Pre-training that receives SIGTERM while computing step ``at`` (as from a cluster scheduler)."""

    def __init__(self, at: int, **kw) -> None:
        super().__init__(**kw)
        self.at = at

    def loss(self, net, lq, gt, step, rank=0, world=1):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss(net, lq, gt, step, rank, world)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    recipe = tiny_recipe()  # 6 steps, 12 items / batch 2: one epoch = 6 steps
    recipe["train"]["batch_size"] = 4  # 3 steps per epoch: the resume crosses an epoch boundary
    full = make_trainer(tmp_path / "full", recipe, model=toy(dropout=0.2), stage=PretrainStage(seed=3))
    initial = _weights(full)
    full_result = full.fit()
    assert full_result.final is not None and full_result.final.is_file()
    assert not list_states(tmp_path / "full")  # save_every 0: only the final weights

    # killed by SIGTERM during step index 3: the step finishes, a state is saved at iteration 4
    first = make_trainer(tmp_path / "cut", recipe, model=toy(dropout=0.2), stage=SignalAtStep(3, seed=3))
    first_result = first.fit()
    assert first_result.interrupted and first_result.iteration == 4 and first_result.final is None
    assert [n for n, _ in list_states(tmp_path / "cut")] == [4]
    # resumed with DataLoader workers: items are functions of (seed, epoch, index), not of the worker
    recipe["train"]["workers"] = 2
    resumed = make_trainer(tmp_path / "cut", recipe, model=toy(dropout=0.2), stage=PretrainStage(seed=3))
    assert resumed.iteration == 4
    resumed_result = resumed.fit()
    assert resumed_result.iteration == 6 and resumed_result.final is not None

    _assert_same(_weights(full), _weights(resumed))
    _assert_same(full.ema.state_dict(), resumed.ema.state_dict())
    changed = max((full.model.state_dict()[k].float() - initial[k].float()).abs().max() for k in initial)
    assert changed > 1e-3  # the comparison is not vacuous
    assert not torch.allclose(full.ema.state_dict()["tail.weight"], full.model.state_dict()["tail.weight"])
    # the logged losses of the resumed steps equal those of the uninterrupted run
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    losses_cut = {r["iter"]: r["loss"] for r in log if "loss" in r}
    losses_full = {r["iter"]: r["loss"] for r in full_result.history if "loss" in r}
    assert losses_cut == pytest.approx(losses_full, rel=1e-6) and sorted(losses_cut) == list(range(1, 7))


def _killed_while_saving(out: str, recipe: dict, target: str, nth: int) -> None:
    """Child process: train, and SIGKILL this process halfway through the ``nth`` write of ``target``
    ("state": the optimiser/EMA/RNG file, "weights": the safetensors file) — no handler can run."""
    import safetensors.torch

    calls = {"n": 0}

    def dying(real, path_arg: int):
        def write(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == nth:
                with open(args[path_arg], "wb") as fh:
                    fh.write(b"half a checkpoint")
                    fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return write

    if target == "state":
        torch.save = dying(torch.save, 1)
    else:
        safetensors.torch.save_file = dying(safetensors.torch.save_file, 1)  # imported at each save
    make_trainer(Path(out), recipe, model=toy(dropout=0.2), stage=PretrainStage(seed=3)).fit()


@pytest.mark.parametrize("target", ["state", "weights"])
def test_sigkill_while_a_checkpoint_is_written_then_resume_matches_uninterrupted(tmp_path, target):
    """SIGKILL (no handler, no final save) while the second checkpoint is being written: the half-written
    file never takes a checkpoint's name, the run resumes from the first one, and ends where an
    uninterrupted run ends (within 1e-6)."""
    import multiprocessing

    recipe = tiny_recipe(train={"save_every": 2, "keep_last": 0})
    full = make_trainer(tmp_path / "full", recipe, model=toy(dropout=0.2), stage=PretrainStage(seed=3))
    full.fit()
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_while_saving, args=(str(tmp_path / "cut"), recipe, target, 2)
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL
    assert [n for n, _ in list_states(tmp_path / "cut")] == [2]  # the torn write is not a checkpoint
    resumed = make_trainer(tmp_path / "cut", recipe, model=toy(dropout=0.2), stage=PretrainStage(seed=3))
    assert resumed.iteration == 2
    assert resumed.fit().iteration == 6
    _assert_same(_weights(full), _weights(resumed))
    _assert_same(full.ema.state_dict(), resumed.ema.state_dict())
    # the resumed run cleared the torn temporary file the kill left behind
    assert not [p.name for p in (tmp_path / "cut" / "ckpt").iterdir() if p.name.startswith(".")]


def test_checkpoints_are_pruned_and_resume_is_refused_when_recipe_changes(tmp_path):
    recipe = tiny_recipe(train={"save_every": 2, "keep_last": 2})
    make_trainer(tmp_path, recipe).fit()
    assert [n for n, _ in list_states(tmp_path)] == [4, 6]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "iter_00000004.safetensors", "iter_00000004.state",
        "iter_00000006.safetensors", "iter_00000006.state",
    ]
    with pytest.raises(ConfigError, match="already holds training states"):
        make_trainer(tmp_path, recipe, resume="never")
    from ramir.errors import CheckpointError

    with pytest.raises(CheckpointError, match="is a pretrain state; this run is finetune"):
        make_trainer(tmp_path, recipe, stage=FinetuneStage(["tail"]))
    changed = toy()
    changed.head.bias.requires_grad_(False)
    with pytest.raises(CheckpointError, match="trainable parameters differ"):
        make_trainer(tmp_path, recipe, model=changed)
    # a complete run resumes at its end and only rewrites the final weights
    again = make_trainer(tmp_path, recipe)
    assert again.iteration == 6 and again.fit().final is not None


def test_validation_is_logged(tmp_path):
    recipe = tiny_recipe(train={"val_every": 3})
    result = make_trainer(tmp_path, recipe, val_set=NoisyImages(n=3, size=24, offset=99)).fit()
    vals = [r for r in result.history if "val_psnr" in r]
    assert [r["iter"] for r in vals] == [3, 6]
    assert all(math.isfinite(r["val_psnr"]) and r["val_psnr_input"] > 15 for r in vals)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history) and (tmp_path / "recipe.yaml").is_file()


# --------------------------------------------------------------------------------------------------
# fine-tuning: exactly the selected layers change, with and without DDP


SELECTED = ["body.2", "tail"]


def _changed_parameters(before: dict, model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_finetune_changes_exactly_the_selected_layers(tmp_path):
    recipe = tiny_recipe(stage="finetune", schedule={"iterations": 1}, ema={"decay": 0.0})
    trainer = make_trainer(tmp_path, recipe, stage=FinetuneStage(SELECTED))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert trainer.trainable == ["body.2.weight", "body.2.bias", "tail.weight", "tail.bias"]
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == 4
    trainer.fit()
    assert _changed_parameters(before, trainer.model) == set(trainer.trainable)


def test_finetune_ranking_selects_top_layers(tmp_path):
    ranking = tmp_path / "ranking.txt"
    ranking.write_text("tail\nbody.0\nhead\nbody.2\n")
    recipe = tiny_recipe(stage="finetune", finetune={"ranking": str(ranking), "ratio": 0.5})
    from ramir.training.engine import build_stage

    stage = build_stage(recipe_from_dict(recipe), toy())
    assert stage.layers == ["tail", "body.0"]
    with pytest.raises(ConfigError, match="not in this network"):
        make_trainer(tmp_path, recipe, stage=FinetuneStage(["tail", "neck"]))


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _run_reference_steps(Path(out_dir), rank, world)
    finally:
        dist.destroy_process_group()


def _run_reference_steps(out: Path, rank: int, world: int) -> None:
    """Two pre-training steps (gradients of the second) and one fine-tuning step (changed parameters)
    on the same global batches of 8, split over ``world`` processes."""
    pre = tiny_recipe(schedule={"iterations": 2}, train={"batch_size": 8 // world},
                      mask={"per_sample": True})
    trainer = make_trainer(out / f"pre{world}", pre, stage=PretrainStage(per_sample=True, seed=3))
    trainer.fit()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    ft = tiny_recipe(stage="finetune", schedule={"iterations": 1}, train={"batch_size": 8 // world})
    tuned = make_trainer(out / f"ft{world}", ft, stage=FinetuneStage(SELECTED))
    before = {n: p.detach().clone() for n, p in tuned.model.named_parameters()}
    tuned.fit()
    if rank == 0:
        result = {"grads": grads, "changed": sorted(_changed_parameters(before, tuned.model)),
                  "ddp": type(tuned.net).__name__, "weights": _weights(tuned), "unused": trainer.unused}
        torch.save(result, out / f"result{world}.pt")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    _run_reference_steps(tmp_path, 0, 1)
    two, one = torch.load(tmp_path / "result2.pt"), torch.load(tmp_path / "result1.pt")
    assert two["ddp"] == "DistributedDataParallel" and one["ddp"] == "Toy"
    assert two["unused"] == one["unused"] == ["spare"]  # frozen before wrapping
    assert two["grads"].keys() == one["grads"].keys() and len(one["grads"]) == 8
    for name, g in one["grads"].items():
        assert torch.allclose(two["grads"][name], g, atol=1e-6, rtol=1e-5), name
        assert g.abs().max() > 1e-4
    expected = ["body.2.bias", "body.2.weight", "tail.bias", "tail.weight"]
    assert one["changed"] == expected and two["changed"] == expected
    _assert_same(one["weights"], two["weights"], tol=1e-6)


# --------------------------------------------------------------------------------------------------
# command line errors: one line, exit 2, before anything heavy is built


def test_cli_reports_recipe_errors(tmp_path, capsys):
    from ramir.cli import main

    finetune = tmp_path / "ft.yaml"
    finetune.write_text(yaml.safe_dump(tiny_recipe(stage="finetune", model={"name": "ram-swinir-small"},
                                                   data={"train": {"sources": []}})))
    assert main(["pretrain", str(finetune)]) == 2
    assert "is a finetune recipe; use `ramir finetune`" in capsys.readouterr().err
    assert main(["finetune", str(finetune)]) == 2
    assert "needs a MAC ranking" in capsys.readouterr().err
    assert main(["finetune", str(finetune), "--ranking", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["finetune", str(finetune), "--set", "finetune.ratoi=0.2"]) == 2
    assert "unknown recipe key 'finetune.ratoi'" in capsys.readouterr().err
    assert main(["finetune", str(finetune), "--init", str(tmp_path / "none.safetensors")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# memory and compilation options


@pytest.mark.parametrize("name, kw", [
    ("nafnet-s", {}),
    ("ram-swinir-small", dict(embed_dim=12, depths=[2], num_heads=[2])),
    ("promptir-small", {}),
])
def test_activation_checkpointing_keeps_gradients(name, kw):
    from ramir import create_model
    from ramir.training.memory import checkpoint_blocks

    torch.manual_seed(0)
    plain = create_model(name, **kw)
    with torch.no_grad():
        for p in plain.parameters():  # NAFNet's zero residual scales would hide its blocks
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = create_model(name, **kw)
    ckpt.load_state_dict(plain.state_dict())
    assert checkpoint_blocks(ckpt) > 0
    x = torch.rand(1, 3, 32, 32)
    for net in (plain, ckpt):
        net.train()
        (net(x) ** 2).mean().backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.grad is None:  # unused (SwinIR's mask_token)
            assert b.grad is None, n
            continue
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), n
    # eval mode with gradients (MAC): blocks run once, so forward hooks see each block a single time
    calls = []
    block = next(m for m in ckpt.modules() if getattr(m, "_ramir_checkpointed", False))
    inner = next(m for m in block.modules() if m is not block and list(m.parameters(recurse=False)))
    handle = inner.register_forward_hook(lambda *_: calls.append(1))  # a recomputation would call it twice
    ckpt.eval()
    (ckpt(x) ** 2).mean().backward()
    handle.remove()
    assert len(calls) == 1
    with pytest.raises(ConfigError, match="no known blocks"):
        checkpoint_blocks(toy())


def test_recipe_options_checkpointing_and_compile_fallback(tmp_path, monkeypatch):
    """`train.compile` falls back to eager when compilation fails; the run's result is the eager one."""
    import warnings

    def broken_compile(module, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")

        return fail

    reference = make_trainer(tmp_path / "eager", tiny_recipe()).fit()
    monkeypatch.setattr(torch, "compile", broken_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = make_trainer(tmp_path / "compiled", tiny_recipe(train={"compile": True})).fit()
    assert any("torch.compile failed" in str(w.message) for w in caught)
    eager_losses = [r["loss"] for r in reference.history if "loss" in r]
    assert [r["loss"] for r in compiled.history if "loss" in r] == pytest.approx(eager_losses, rel=1e-6)


def test_psnr_loss_is_the_mean_of_per_sample_decibels():
    from ramir.training.losses import pixel_loss

    torch.manual_seed(0)
    target = torch.rand(3, 3, 8, 8)
    error = torch.randn(3, 3, 8, 8) * torch.tensor([0.01, 0.1, 0.3]).view(3, 1, 1, 1)
    pred = target + error
    mse = error.pow(2).flatten(1).mean(1)
    expected = (10 * torch.log10(mse + 1e-8)).mean()
    assert torch.allclose(pixel_loss("psnr", pred, target), expected, atol=1e-5)
    ones = torch.ones(3, 1, 8, 8)
    assert torch.allclose(pixel_loss("psnr", pred, target, ones), expected, atol=1e-4)
    # equal weight in decibels: ten times the error of any one sample adds the same 20/3 dB
    for i in range(3):
        scaled = error.clone()
        scaled[i] *= 10
        assert torch.allclose(pixel_loss("psnr", target + scaled, target) - expected,
                              torch.tensor(20 / 3), atol=1e-3)
    half = (torch.arange(64).view(1, 1, 8, 8) % 2).expand(3, 1, 8, 8).float()  # every other pixel
    masked_mse = (error.pow(2) * half).flatten(1).sum(1) / (half.flatten(1).sum(1) * 3)
    expected_masked = (10 * torch.log10(masked_mse)).mean()
    assert torch.allclose(pixel_loss("psnr", pred, target, half), expected_masked, atol=1e-4)
    assert torch.allclose(pixel_loss("l1", pred, target), error.abs().mean())
    with pytest.raises(ValueError, match="unknown loss"):
        pixel_loss("l3", pred, target)


def test_recipe_loss_reaches_both_stages():
    r = recipe_from_dict({**tiny_recipe(), "loss": "psnr"})
    assert build_stage(r, toy()).loss_kind == "psnr"
    with pytest.raises(ConfigError, match="loss"):
        recipe_from_dict({**tiny_recipe(), "loss": "l2"}).validate()


def test_ddp_always_wraps_a_one_process_group(tmp_path):
    import torch.distributed as dist

    from ramir.training import distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        env, device, owned = distributed.setup("cpu", always=True)
        assert env.distributed and env.joined and not owned and env.world_size == 1
        assert type(distributed.wrap(toy(), env, device)).__name__ == "DistributedDataParallel"
        env, _, _ = distributed.setup("cpu")  # auto: one process is never wrapped
        assert not env.distributed
    finally:
        dist.destroy_process_group()


def test_resume_with_another_schedule_or_mix_is_refused_unless_allowed(tmp_path):
    from ramir.errors import CheckpointError

    recipe = tiny_recipe(train={"save_every": 2})
    make_trainer(tmp_path, recipe).fit()
    longer = tiny_recipe(schedule={"iterations": 12, "warmup": 2, "eta_min": 1e-5}, train={"save_every": 2})
    with pytest.raises(CheckpointError, match="another schedule"):
        make_trainer(tmp_path, longer)
    allowed = tiny_recipe(schedule={"iterations": 12, "warmup": 2, "eta_min": 1e-5},
                          train={"save_every": 2, "allow_recipe_change": True})
    assert make_trainer(tmp_path, allowed).iteration == 6  # resumed where the state left off
    remixed = tiny_recipe(train={"save_every": 2})
    remixed["data"] = {"train": {"sources": [{"name": "other", "root": "x", "weight": 2.0}]}}
    with pytest.raises(CheckpointError, match="another data mix"):
        make_trainer(tmp_path, remixed)


# --------------------------------------------------------------------------------------------------
# fine-tuning modes of the shipped tiny recipes (configs/cpu_tiny_*.yaml with --set): from the EMA
# weights (finetune.init: ema), and every layer (finetune.ratio 1 without a ranking: full fine-tuning
# from init_from, or plain paired training without it, the paper's baseline)


def _tiny_overrides(photos: Path) -> list[str]:
    """Three steps of two 32-px crops from ``photos``, no validation, nothing saved until the end, and
    the test process's threads (the recipe's `threads: 2` would change them for later tests)."""
    noise = f"[{{name: noise, type: clean, root: {photos}, degradation: {{kind: noise, sigma: 25}}}}]"
    return [
        f"data.train.sources={noise}", "data.train.patch_size=32", "data.train.samples_per_epoch=8",
        "data.val=null", "schedule.iterations=3", "schedule.warmup=1", "train.batch_size=2",
        "train.threads=0", "train.save_every=0", "train.val_every=0", "train.log_every=1",
    ]


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> tuple[Path, list[str]]:
    """``ramir pretrain configs/cpu_tiny_pretrain.yaml`` for three steps with an EMA of decay 0.5, so its
    raw and EMA weights differ; returns the final checkpoint and the overrides the runs share."""
    import numpy as np
    from PIL import Image

    from ramir.cli import main

    root = tmp_path_factory.mktemp("tiny_ft")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = rng.random((8, 8, 3)) * 255
        Image.fromarray(smooth.astype(np.uint8)).resize((64, 48), Image.BICUBIC).save(photos / f"p{i}.png")
    overrides = _tiny_overrides(photos)
    argv = ["pretrain", str(CONFIGS / "cpu_tiny_pretrain.yaml"), "--output", str(root / "pre"),
            "--no-progress"]
    for item in [*overrides, "ema.decay=0.5"]:
        argv += ["--set", item]
    assert main(argv) == 0
    return root / "pre" / "final.safetensors", overrides


def _finetune_trainer(out: Path, overrides: list[str]) -> Trainer:
    """A Trainer built from configs/cpu_tiny_finetune.yaml alone (network, stage and data from the recipe)."""
    recipe = load_recipe(CONFIGS / "cpu_tiny_finetune.yaml", overrides)
    return Trainer(recipe, output_dir=out, progress=False)


def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("init", ["ema", "raw"])
def test_finetune_starts_from_the_chosen_pretrained_weights(tmp_path, tiny_pretrained, init):
    """``finetune.init: ema`` starts from the EMA weights of the pre-training checkpoint, ``raw`` (the
    reference) from its raw weights; the layers not selected keep those weights to the bit."""
    from ramir.checkpoints import load_checkpoint
    from ramir.cli import main

    pretrained, overrides = tiny_pretrained
    ckpt = load_checkpoint(pretrained)
    raw, ema = ckpt.raw_state_dict, ckpt.ema_state_dict
    differ = {k for k in raw if not torch.equal(raw[k], ema[k])}
    assert len(differ) > 10  # raw and EMA differ: the comparison can tell them apart
    start = ema if init == "ema" else raw
    ranking = tmp_path / "ranking.json"
    assert main(["mac", str(pretrained), "--method", "random", "--seed", "1", "--out", str(ranking)]) == 0
    trainer = _finetune_trainer(tmp_path / "ft", [
        *overrides, f"init_from={pretrained}", f"finetune.ranking={ranking}", f"finetune.init={init}",
    ])
    initial = trainer.model.state_dict()
    assert initial.keys() == start.keys()
    for key in start:
        assert torch.equal(initial[key], start[key]), key
    assert trainer.ema is not None  # the fine-tuning's own EMA starts from the same weights
    assert all(torch.equal(v, start[k]) for k, v in trainer.ema.state_dict().items())

    selected = trainer.stage.layers
    assert 0 < len(selected) < len(attributable_layers(trainer.model))
    before = _parameters(trainer.model)
    assert trainer.fit().final is not None
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved == set(trainer.trainable)
    assert {n.rsplit(".", 1)[0] for n in moved} <= set(selected)
    tuned = load_checkpoint(tmp_path / "ft" / "final.safetensors").raw_state_dict
    kept = [k for k in start if k not in moved]
    assert any(k in differ for k in kept)  # some kept weights tell raw from EMA
    for key in kept:
        assert torch.equal(tuned[key], start[key]), key


def test_finetune_from_ema_needs_an_ema(tmp_path, tiny_pretrained, capsys):
    from ramir.checkpoints import load_checkpoint, load_network, save_checkpoint
    from ramir.cli import main

    pretrained, overrides = tiny_pretrained
    bare = tmp_path / "no_ema.safetensors"
    save_checkpoint(bare, load_network(pretrained, prefer_ema=False), stage="pretrain")
    assert load_checkpoint(bare).ema_state_dict is None
    argv = ["finetune", str(CONFIGS / "cpu_tiny_finetune.yaml"), "--init", str(bare), "--ratio", "1.0",
            "--output", str(tmp_path / "ft"), "--no-progress"]
    for item in [*overrides, "finetune.ranking=null", "finetune.init=ema"]:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no EMA weights (finetune.init: ema)" in err[0]


@pytest.mark.parametrize("init_from", [True, False], ids=["full_finetune", "plain_baseline"])
def test_ratio_one_without_a_ranking_trains_every_layer(tmp_path, tiny_pretrained, init_from):
    """``finetune.ratio: 1`` with no ranking: every attributable layer is selected and every parameter
    of a layer is trained (RAM-SwinIR's ``mask_token``, used on masked inputs only, is no layer's), starting
    from ``init_from``'s raw weights, or, without one, from a fresh network (plain paired training)."""
    from ramir.checkpoints import load_checkpoint

    pretrained, overrides = tiny_pretrained
    extra = [f"init_from={pretrained}" if init_from else "init_from=null", "finetune.ranking=null",
             "finetune.ratio=1.0"]
    trainer = _finetune_trainer(tmp_path / "ft", [*overrides, *extra])
    names = [n for n, _ in trainer.model.named_parameters()]
    assert trainer.stage.layers == attributable_layers(trainer.model)
    # every parameter trains but the mask token, which belongs to no layer (only masked inputs use it)
    assert trainer.trainable == [n for n in names if n != "mask_token"] and len(names) > 60
    start = _parameters(trainer.model)
    if init_from:
        raw = load_checkpoint(pretrained).raw_state_dict
        assert all(torch.equal(start[n], raw[n]) for n in names)
    result = trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(start[n], p.detach())}
    assert moved == set(trainer.trainable)
    meta = load_checkpoint(result.final).metadata
    assert meta["finetuned_layers"] == attributable_layers(trainer.model)
