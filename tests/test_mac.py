"""Mask Attribute Conductance: the reference fixture (small SwinIR), completeness, baselines, outputs, CLI."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import apply_weight_rule, load_json, load_tensors, within
from ramir.errors import RamirError
from ramir.heatmap import heatmap_grid, save_heatmap
from ramir.layers import attributable_layers
from ramir.mac import (
    MaskAttributeConductance,
    completeness_delta,
    conductance_sums,
    gradient_magnitude,
    gradient_magnitude_objective,
    integrated_gradients_scores,
    layer_output_bytes,
    mac_scores,
    path_alphas,
    random_scores,
    soft_mask,
    suggest_batch_steps,
)
from ramir.ranking import load_ranking, rank_layers, ranking_from_scores, save_ranking

# ----------------------------------------------------------------------------------- the pure functions


def test_path_alphas_follow_the_reference_schedule():
    alphas = path_alphas(16, 0.5)
    assert len(alphas) == 16
    assert alphas[0] == 0.5 and alphas[-1] == 1 - 0.5 / 16  # alpha = 1 is never evaluated
    assert all(b > a for a, b in itertools.pairwise(alphas))
    assert path_alphas(4, 0.2) == [0.8, 0.8 + 0.2 / 4, 0.8 + 0.4 / 4, 0.8 + 0.6 / 4]
    with pytest.raises(ValueError):
        path_alphas(1, 0.5)
    with pytest.raises(ValueError):
        path_alphas(10, 0.0)


def test_soft_mask_counts_and_boundary_values():
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3))
    alpha = 0.555
    m = soft_mask(alpha, perm, 10, 10, 1e4)
    assert m.dtype == torch.float32 and m.shape == (10, 10)
    flat = m.flatten()
    cnt = math.ceil(100 * alpha)
    assert int((flat > 0).sum()) == cnt
    assert torch.all(flat[perm[cnt:]] == 0)
    assert torch.all(flat[perm[: cnt - 1]] == 1)  # far from the boundary: sigmoid saturates
    expected_last = 1 / (1 + math.exp(-1e4 * (alpha - (cnt - 1) / 100)))
    assert float(flat[perm[cnt - 1]]) == pytest.approx(expected_last, rel=1e-6)
    # without the cut-off every pixel gets its (smooth) sigmoid value
    smooth = soft_mask(alpha, perm, 10, 10, 20.0, truncate=False).flatten()
    assert torch.all(smooth > 0) and torch.all(torch.diff(smooth[perm]) < 0)


def test_gradient_magnitude_matches_a_loop():
    y = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    expected = 0.0
    for b in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    dx = y[b, c, i, j] - y[b, c, i + 1, j]
                    dy = y[b, c, i, j] - y[b, c, i, j + 1]
                    expected += math.sqrt(float(dx) ** 2 + float(dy) ** 2)
    assert gradient_magnitude(y).shape == (2, 3, 4, 5)
    assert float(gradient_magnitude_objective(y)) == pytest.approx(expected, rel=1e-12)


def test_gradient_magnitude_gradient_is_finite_on_flat_outputs():
    """The reference's pow(., 0.5) gives NaN gradients where the output is flat; ours gives 0 there and
    the reference's gradient everywhere else."""
    y = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    y[:, :, 2:5, 2:5] = 0.3  # a flat patch: some pixels have both differences exactly 0
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(gradient_magnitude_objective(y), y)
    assert torch.isfinite(grad).all()
    y_ref = y.detach().clone().requires_grad_(True)
    c = y_ref[:, :, :-1, :-1]
    squared = (c - y_ref[:, :, 1:, :-1]) ** 2 + (c - y_ref[:, :, :-1, 1:]) ** 2
    (ref,) = torch.autograd.grad(torch.pow(squared, 0.5).sum(), y_ref)
    assert not torch.isfinite(ref).all()
    finite = torch.isfinite(ref)
    assert torch.equal(grad[finite], ref[finite])


# ----------------------------------------------------------------------------------- reference fixture


@pytest.fixture(scope="module")
def mac_fixture():
    return load_json("mac_swinir_small.json"), load_tensors("mac_swinir_small.safetensors")


@pytest.fixture(scope="module")
def small_swinir():
    from ramir import create_model

    model = create_model("ram-swinir-small")
    apply_weight_rule(model)
    return model.eval()


def test_soft_masks_equal_the_reference(mac_fixture):
    _, tensors = mac_fixture
    masks = torch.stack([soft_mask(a, tensors["perm"], 64, 64, 1e4) for a in path_alphas(16, 0.5)])
    assert torch.equal(masks, tensors["soft_masks_T16"])


def _max_rel_diff(scores: dict[str, float], reference: list[float]) -> float:
    got = np.array(list(scores.values()), dtype=np.float64)
    ref = np.array(reference, dtype=np.float64)
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


def _tie_groups(ranking: list[str], names: list[str], ties: list[list[int]]) -> list[int]:
    """The ranking as a sequence of tie-group ids (tied layers share the id of the lower index)."""
    group = {name: i for i, name in enumerate(names)}
    for a, b in ties:
        group[names[b]] = group[names[a]] = min(a, b)
    return [group[name] for name in ranking]


# The small SwinIR. Measured with torch 2.13 under its default, AVX2 and AVX-512 kernels on 1 and 2 threads
# (benchmarks/golden_spread.py, docs/robustness.md): at most 5.95e-6 (T=16, AVX2 kernels) and 2.51e-6
# (T=200): float rounding (the reference's own float32 and float64 runs differ by 1.95e-6, fixtures README
# §4), where T=200 instead of 16 alone moves the scores by 2.5-7.7 %. The bound is 4x the largest, still
# three orders of magnitude below what a change of the path would do.
MAC_REL = 2.4e-5


def _check_against_reference(scores, meta, steps, rel_tol=MAC_REL, label="swinir-small"):
    names = meta["layer_names"]
    assert list(scores) == names
    rel = _max_rel_diff(scores, meta[f"scores_T{steps}"])
    print(f"T={steps}: max relative score difference to the reference {rel:.3g}")
    within(f"MAC {label} T={steps} vs golden (worst layer, relative)", rel, rel_tol)
    ties = meta[f"exact_score_ties_T{steps}"]
    for a, b in ties:  # a module returning its child's output tensor gets exactly the same score
        assert scores[names[a]] == scores[names[b]]
    ours = _tie_groups(ranking_from_scores(scores), names, ties)
    assert ours == _tie_groups(meta[f"ranking_T{steps}_names"], names, ties)


@pytest.mark.golden
def test_scores_match_the_reference_T16(mac_fixture, small_swinir):
    meta, tensors = mac_fixture
    assert attributable_layers(small_swinir) == meta["layer_names"]
    scores = mac_scores(small_swinir, tensors["x"], steps=16, permutations=[tensors["perm"]])
    _check_against_reference(scores, meta, 16)


@pytest.mark.golden
@pytest.mark.parametrize("batch_steps", [8, 16])
def test_batched_steps_equal_one_at_a_time(mac_fixture, small_swinir, batch_steps):
    """Also checks that window-layout outputs (SwinIR attention) are split per step correctly."""
    _, tensors = mac_fixture
    kwargs = dict(steps=16, permutations=[tensors["perm"]])
    single = mac_scores(small_swinir, tensors["x"], **kwargs)
    batched = mac_scores(small_swinir, tensors["x"], batch_steps=batch_steps, **kwargs)
    rel = _max_rel_diff(batched, list(single.values()))
    # float reduction order only; a wrong per-step split gives O(1) differences
    within(f"MAC swinir-small steps batched {batch_steps} vs one at a time (relative)", rel, BATCHED_REL)
    assert ranking_from_scores(batched) == ranking_from_scores(single)


@pytest.mark.golden
def test_scores_match_the_reference_T200_batched(mac_fixture, small_swinir):
    meta, tensors = mac_fixture
    scores = mac_scores(small_swinir, tensors["x"], steps=200, permutations=[tensors["perm"]], batch_steps=20)
    _check_against_reference(scores, meta, 200)


# PromptIR-default (fixtures README §3.3: the same procedure, input x and permutation at T=16). Measured with
# torch 2.13 (all six settings): the 9 layers scoring above 1e-4 of the top within 1.52e-6 relative; all 445
# within 1.13e-3 (default kernels, 1 thread; 6.2e-4 to 9.7e-4 elsewhere), median 1.1e-6. The large
# gaps are all in layers scoring 1e-11 to 1e-6 (the top scores 5.05: the latent FFNs' project_out, the
# prompts), whose conductance is a small difference of long sums: ramir's own scores there move by up to
# 1.5e-3 between 1 and 2 threads, so they are float rounding, not a different computation. Same ranking.
PROMPTIR_MAC_REL = 4.6e-3  # every layer: 4x 1.13e-3
BATCHED_REL = 9.7e-6  # steps batched vs one at a time: 4x 2.41e-6 (the small SwinIR, AVX2 kernels)
PROMPTIR_MAIN = 1e-4  # layers scoring above this fraction of the top score must also meet PROMPTIR_MAIN_REL
PROMPTIR_MAIN_REL = 6.1e-6  # 4x 1.52e-6


@pytest.mark.golden
def test_promptir_scores_match_the_reference_T16(mac_fixture):
    """The reference's MAC of the default PromptIR under the weight rule: every score, the ranking (modulo
    exact ties) and the ties themselves."""
    from ramir import create_model

    meta = load_json("mac_promptir_default_T16.json")
    _, tensors = mac_fixture
    assert meta["config"] == "promptir_default" and meta["constructor_kwargs"] == {"decoder": True}
    assert (meta["T"], meta["pretrained_ratio"], meta["k"], meta["input_hw"]) == (16, 0.5, 10000, [64, 64])
    model = create_model("promptir").eval()
    apply_weight_rule(model)
    assert attributable_layers(model) == meta["layer_names"]
    scores = mac_scores(model, tensors["x"], steps=16, ratio=0.5, sharpness=1e4,
                        permutations=[tensors["perm"]])
    _check_against_reference(scores, meta, 16, rel_tol=PROMPTIR_MAC_REL, label="promptir")
    reference = dict(zip(meta["layer_names"], meta["scores_T16"], strict=True))
    top = max(reference.values())
    main = {name: value for name, value in reference.items() if value > PROMPTIR_MAIN * top}
    assert len(main) == 9 and {"output", "patch_embed.proj"} <= set(main)
    within("MAC promptir T=16 vs golden (the 9 main layers, relative)",
           _max_rel_diff({n: scores[n] for n in main}, list(main.values())), PROMPTIR_MAIN_REL)


# ----------------------------------------------------------------------------------- completeness


def _smooth_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Softplus(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).double()


CUT_LAYERS = ("0", "2", "4")  # every conv cuts this sequential network


def test_conductance_is_complete_on_a_smooth_mask_path():
    """sum over units of cond_l -> F(x_end) - F(x_start) for a cut layer, error shrinking like 1/T."""
    net = _smooth_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    errors = []
    for steps in (16, 64, 256):
        sums, f_start, f_end = conductance_sums(
            net, x, path="mask", steps=steps, sharpness=20.0, truncate=False, batch_steps=64
        )
        delta = f_end - f_start
        assert abs(delta) > 0.1
        errors.append(max(abs(sums[name] - delta) / abs(delta) for name in CUT_LAYERS))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 and errors[0] / errors[2] > 8


def test_integrated_gradients_conductance_is_complete():
    net = _smooth_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    errors = []
    for steps in (8, 32, 128):
        sums, f_start, f_end = conductance_sums(net, x, path="linear", steps=steps, batch_steps=50)
        with torch.no_grad():
            assert f_start == pytest.approx(float(gradient_magnitude_objective(net(torch.zeros_like(x)))))
            assert f_end == pytest.approx(float(gradient_magnitude_objective(net(x))))
        delta = f_end - f_start
        errors.append(max(abs(sums[name] - delta) / abs(delta) for name in CUT_LAYERS))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_a_baseline_other_than_zero_moves_the_path_start_and_stays_complete():
    """The public baseline x': F at the path's start is F(net(x')), and completeness holds from it."""
    net = _smooth_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    grey = torch.full_like(x, 0.3)
    _, f_start, _ = conductance_sums(net, x, path="linear", steps=128, batch_steps=50, baseline=grey)
    with torch.no_grad():
        assert f_start == pytest.approx(float(gradient_magnitude_objective(net(grey))))
    deltas = completeness_delta(net, x, path="linear", steps=128, batch_steps=50, baseline=0.3)
    assert max(abs(deltas[name]) for name in CUT_LAYERS) < 0.01
    coarse = completeness_delta(net, x, path="linear", steps=8, batch_steps=50, baseline=0.3)
    assert max(abs(coarse[name]) for name in CUT_LAYERS) > max(abs(deltas[name]) for name in CUT_LAYERS)
    # MAC from a grey masked image differs from MAC from the zero image
    xf, netf = x.float(), _smooth_net().float()
    grey_mac = MaskAttributeConductance(netf).attribute(xf, steps=8, baseline=0.3)
    assert mac_scores(netf, xf, steps=8) != grey_mac


def test_rank_layers_is_the_python_call_behind_ramir_mac():
    torch.manual_seed(0)
    net = _smooth_net().float()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    mac = rank_layers(net, x, "mac", steps=6, seed=3)
    assert mac.scores == mac_scores(net, x, steps=6, generator=torch.Generator().manual_seed(3))
    assert mac.ranking == ranking_from_scores(mac.scores) and mac.top(0.34) == mac.ranking[:1]
    assert mac.settings["method"] == "mac" and mac.settings["batch_steps"] == 1  # CPU: one point per pass
    assert rank_layers(net, x, "ig", steps=5).scores == integrated_gradients_scores(net, x, steps=5)
    assert rank_layers(net, method="random", seed=2).scores == random_scores(net, seed=2)
    with pytest.raises(ValueError, match="needs images"):
        rank_layers(net, None, "mac")
    with pytest.raises(ValueError, match="unknown ranking method"):
        rank_layers(net, x, "shap")


@pytest.mark.golden
def test_integrated_gradients_batched_equals_unbatched():
    net = _smooth_net().float()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    single = integrated_gradients_scores(net, x, steps=10)
    batched = integrated_gradients_scores(net, x, steps=10, batch_steps=4)
    assert list(single) == ["0", "2", "4"] and all(v > 0 for v in single.values())
    within("integrated gradients batched vs unbatched (relative)",
           _max_rel_diff(batched, list(single.values())), BATCHED_REL)


# ----------------------------------------------------------------------------------- hooks and state


class _Pair(nn.Module):
    """Returns a tuple; MAC must attribute the tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x), "extra"


class _Wrapper(nn.Module):
    """Owns a parameter and returns its child's output tensor itself (like WindowAttention)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.proj = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.proj(x * self.scale)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.pair = _Pair()
        self.wrap = _Wrapper()
        self.norm = nn.BatchNorm2d(4)
        self.tail = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        h = torch.tanh(self.head(x))
        h, _ = self.pair(h)
        return self.tail(self.norm(self.wrap(torch.tanh(h))))


@pytest.mark.golden
def test_tuple_outputs_ties_and_restored_state():
    torch.manual_seed(0)
    model = _Toy().train()
    model.head.weight.requires_grad_(False)
    x = torch.randn(2, 3, 12, 12)
    scores = mac_scores(model, x, steps=6, batch_steps=3)
    assert list(scores) == attributable_layers(model)
    assert all(v > 0 for v in scores.values())
    assert scores["wrap"] == scores["wrap.proj"]
    # the model's modes and requires_grad flags come back; no parameter gradient was made
    assert model.training and model.norm.training
    assert not model.head.weight.requires_grad and model.tail.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    # eval mode inside: BatchNorm uses running statistics, so batching the steps changes nothing
    single = mac_scores(model, x, steps=6)
    within("MAC toy steps batched vs one at a time (relative)", _max_rel_diff(scores, list(single.values())),
           BATCHED_REL)


def test_memory_estimate_and_batch_suggestion():
    model = _Toy()
    x = torch.randn(1, 3, 10, 12)
    # head, pair.conv, wrap, wrap.proj, norm: 4 channels each; tail: 3 channels (float32)
    per_point = (5 * 4 + 3) * 10 * 12 * 4
    assert layer_output_bytes(model, x) == per_point
    assert suggest_batch_steps(model, x, 0) == 1
    assert suggest_batch_steps(model, x, 10**12) == 16
    assert suggest_batch_steps(model, x, int(9.6 * per_point)) == 2


def test_auto_batch_steps_batches_on_a_gpu_only(monkeypatch):
    from ramir import devices
    from ramir.ranking import auto_batch_steps

    model = _Toy()
    x = torch.randn(1, 3, 10, 12)
    monkeypatch.setattr(devices, "free_memory", lambda device: 10**12)
    # on the CPU batching does not pay (docs/performance.md), whatever memory is free
    assert auto_batch_steps(model, x, torch.device("cpu")) == 1
    # on a GPU: as many as half the free memory allows, up to the measured best of 32 (docs/performance.md)
    assert auto_batch_steps(model, x, torch.device("cuda")) == 32


def test_pixel_orders_come_from_the_generator():
    torch.manual_seed(0)
    model = _Toy()
    x = torch.randn(1, 3, 8, 8)
    a = mac_scores(model, x, steps=4, generator=torch.Generator().manual_seed(5))
    b = mac_scores(model, x, steps=4, generator=torch.Generator().manual_seed(5))
    c = mac_scores(model, x, steps=4, generator=torch.Generator().manual_seed(6))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    d = mac_scores(model, x, steps=4)  # default: seed 0
    e = mac_scores(model, x, steps=4, permutations=[perm])
    assert a == b and a != c and d == e
    with pytest.raises(ValueError, match="permutations"):
        mac_scores(model, x, steps=4, permutations=[perm, perm])
    with pytest.raises(ValueError, match="permutation"):
        mac_scores(model, x, steps=4, permutations=[torch.zeros(64, dtype=torch.long)])


def test_scores_sum_over_images():
    torch.manual_seed(0)
    model = _Toy()
    x = torch.randn(2, 3, 8, 8)
    perms = [torch.randperm(64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    both = MaskAttributeConductance(model).attribute(x, steps=5, permutations=perms)
    first = mac_scores(model, x[:1], steps=5, permutations=perms[:1])
    second = mac_scores(model, x[1:], steps=5, permutations=perms[1:])
    for name in both:
        assert both[name] == pytest.approx(first[name] + second[name], rel=1e-6)


class _Reuse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(self.conv(x))


class _Constant(nn.Module):
    """A layer whose output does not scale with the batch (cannot be split per step)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Linear(2, 3)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        bias = self.table(torch.ones(5, 2)).mean(0)
        return self.conv(x) + bias.view(1, 3, 1, 1)


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.out = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.out(torch.nn.functional.relu(self.conv(x), inplace=True))


def test_unsupported_networks_raise_clear_errors():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="ran 2 times"):
        mac_scores(_Reuse(), x, steps=3)
    with pytest.raises(ValueError, match="in place"):
        mac_scores(_InPlace(), x, steps=3)
    with pytest.raises(ValueError, match="batch_steps=1"):
        mac_scores(_Constant(), x, steps=5, batch_steps=2)
    assert set(mac_scores(_Constant(), x, steps=3)) == {"table", "conv"}
    with pytest.raises(ValueError, match="unknown layer"):
        MaskAttributeConductance(_Toy(), layers=["nope"])


# ----------------------------------------------------------------------------------- rankings and outputs


def test_ranking_from_scores_is_descending_and_stable():
    scores = {"a": 0.1, "b": 0.3, "c": 0.1, "d": 0.2}
    assert ranking_from_scores(scores) == ["b", "d", "a", "c"]
    with pytest.raises(ValueError):
        ranking_from_scores({"a": float("nan")})


def test_random_scores_are_a_seeded_random_ranking():
    model = _Toy()
    a, b, c = random_scores(model, 0), random_scores(model, 0), random_scores(model, 1)
    assert a == b and a != c and list(a) == attributable_layers(model)
    assert sorted(ranking_from_scores(a)) == sorted(a)


def test_save_and_load_ranking(tmp_path):
    from ramir import create_model

    model = create_model("ram-swinir-small")
    layers = attributable_layers(model)
    scores = {name: float(i % 7) + 0.5 for i, name in enumerate(layers)}
    path = tmp_path / "ranking.json"
    settings = {"method": "mac", "steps": 16, "ratio": 0.5, "sharpness": 1e4, "images": 1, "seed": 0}
    save_ranking(path, scores, model, settings, images_info=[{"path": "x.png"}])
    doc = json.loads(path.read_text())
    assert doc["settings"] == settings and doc["network"]["arch"] == "swinir"
    assert doc["ranking"] == ranking_from_scores(scores) == load_ranking(path)
    by_name = {entry["name"]: entry for entry in doc["layers"]}
    assert [entry["name"] for entry in doc["layers"]] == layers
    assert by_name["conv_first"]["class"] == "Conv2d" and by_name["patch_embed.norm"]["class"] == "LayerNorm"
    assert all(doc["ranking"][e["rank"] - 1] == e["name"] for e in doc["layers"])
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temporary left
    # the reference's filter_name.txt (one name per line) is accepted too
    txt = tmp_path / "filter_name.txt"
    txt.write_text("\n".join(doc["ranking"]) + "\n")
    assert load_ranking(txt) == doc["ranking"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"scores": []}')
    with pytest.raises(RamirError):
        load_ranking(bad)
    with pytest.raises(RamirError):
        load_ranking(tmp_path / "missing.json")


def test_heatmap_grid_and_png(tmp_path, mac_fixture):
    meta, _ = mac_fixture
    scores = dict(zip(meta["layer_names"], meta["scores_T16"]))
    rows, cols, grid = heatmap_grid(scores)
    assert rows[:4] == ["conv_first", "patch_embed.norm", "layers.0.residual_group.blocks.0",
                        "layers.0.residual_group.blocks.1"]
    assert rows[-1] == "conv_last" and len(rows) == 11
    assert cols == ["", "norm1", "attn", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2", "conv"]
    assert np.isfinite(grid).sum() == len(scores)
    assert grid[rows.index("layers.1"), cols.index("conv")] == scores["layers.1.conv"]
    # PromptIR names: blocks without an index are grouped by their shared first component
    prompt = load_json("mac_promptir_default_T16.json")
    rows, cols, grid = heatmap_grid(dict(zip(prompt["layer_names"], prompt["scores_T16"])))
    assert {"prompt1", "noise_level3", "encoder_level1.0", "down1_2.body.0", "output"} <= set(rows)
    assert grid[rows.index("noise_level3"), cols.index("attn.qkv")] == prompt["scores_T16"][
        prompt["layer_names"].index("noise_level3.attn.qkv")]
    assert np.isnan(grid[rows.index("output"), cols.index("attn.qkv")])
    assert np.isfinite(grid).sum() == 445
    path = tmp_path / "mac.png"
    save_heatmap(path, scores)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 11 * 16 and image.shape[1] > 9 * 16
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert (253, 231, 37) in colours and (68, 1, 84) in colours  # the highest and lowest scores


# ----------------------------------------------------------------------------------- command line


def _tiny_checkpoint(tmp_path):
    from ramir import checkpoints, create_model

    torch.manual_seed(0)
    model = create_model("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
    path = tmp_path / "tiny.safetensors"
    checkpoints.save_checkpoint(path, model, stage="pretrain")
    return path, model


def _write_images(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_cli_writes_ranking_and_heatmap(tmp_path):
    from ramir.cli import main

    ckpt, model = _tiny_checkpoint(tmp_path)
    _write_images(tmp_path / "images", [(20, 24), (16, 30)])
    out, fig = tmp_path / "ranking.json", tmp_path / "mac.png"
    code = main([
        "mac", str(ckpt), "--images", str(tmp_path / "images"), "--size", "16", "--steps", "6",
        "--batch-steps", "3", "--out", str(out), "--heatmap", str(fig), "--threads", "1", "--quiet",
    ])
    assert code == 0
    doc = json.loads(out.read_text())
    assert sorted(doc["ranking"]) == sorted(attributable_layers(model))
    assert doc["settings"]["method"] == "mac" and doc["settings"]["images"] == 2
    assert [info["size"] for info in doc["images"]] == [16, 16]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the CLI computes exactly what the library does on the same crops
    from ramir.checkpoints import load_network
    from ramir.data.folders import read_rgb_float
    from ramir.imagespace import normalize

    crops = []
    for i, (h, w) in enumerate([(20, 24), (16, 30)]):
        img = read_rgb_float(tmp_path / "images" / f"im{i}.png")
        top, left = (h - 16) // 2, (w - 16) // 2
        crops.append(torch.from_numpy(img[top : top + 16, left : left + 16].transpose(2, 0, 1).copy()))
    expected = mac_scores(load_network(ckpt, prefer_ema=False), normalize(torch.stack(crops)), steps=6,
                          generator=torch.Generator().manual_seed(0))
    assert [e["score"] for e in doc["layers"]] == pytest.approx(list(expected.values()), rel=1e-4)


def test_cli_random_and_errors(tmp_path, capsys):
    from ramir.cli import main

    ckpt, model = _tiny_checkpoint(tmp_path)
    out = tmp_path / "random.json"
    assert main(["mac", str(ckpt), "--method", "random", "--seed", "3", "--out", str(out)]) == 0
    assert load_ranking(out) == ranking_from_scores(random_scores(model, seed=3))
    _write_images(tmp_path / "ok", [(16, 16)])
    assert main(["mac", str(ckpt), "--images", str(tmp_path / "ok"), "--method", "ig", "--size", "16",
                 "--steps", "3", "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["method"] == "ig" and len(doc["ranking"]) == len(attributable_layers(model))
    (tmp_path / "empty").mkdir()
    assert main(["mac", str(ckpt), "--images", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no images" in capsys.readouterr().err
    _write_images(tmp_path / "small", [(10, 10)])
    assert main(["mac", str(ckpt), "--images", str(tmp_path / "small"), "--out", str(out)]) == 2
    assert "smaller than" in capsys.readouterr().err
    assert main(["mac", str(ckpt), "--out", str(out)]) == 2
    assert "--images" in capsys.readouterr().err


def test_cli_takes_images_from_a_recipe(tmp_path):
    from ramir.cli import main

    ckpt, _ = _tiny_checkpoint(tmp_path)
    _write_images(tmp_path / "clean", [(40, 40), (36, 44), (40, 40)])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  train:\n    patch_size: 16\n    sources:\n"
        "      - {name: noise, type: clean, root: clean, degradation: {kind: noise, sigma: 25}}\n"
        "      - {name: blur, type: clean, root: clean, degradation: {kind: blur, sigma: 2.0}}\n"
    )
    out = tmp_path / "ranking.json"
    args = ["mac", str(ckpt), "--config", str(recipe), "--per-source", "2", "--size", "16", "--steps", "4",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert [info["task"] for info in doc["images"]] == ["noise", "noise", "blur", "blur"]
    assert doc["settings"]["per_source"] == 2 and doc["settings"]["images"] == 4
    assert doc["settings"]["batch_steps"] == 1  # --batch-steps auto, on the CPU
    (tmp_path / "empty.yaml").write_text("name: x\n")
    assert main([*args[:2], "--config", str(tmp_path / "empty.yaml"), "--out", str(out)]) == 2
