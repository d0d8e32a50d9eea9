"""RAM-Restormer (RAM++) against the reference fixtures: layout, weight rule, outputs, layers, checkpoints.

Goldens in ``fixtures/rampp/`` (from the official ``AdaSAM_RestormerWoskip``, fixtures README "RAM++").
Unlike PromptIR there is no global skip, so the output is all network: float32 outputs are compared
with the fp32 and fp64 goldens and float64 outputs with the fp64 goldens, each at its measured error
times a margin (below), and in float64 every attributable layer's output against the reference's
per-layer statistics, in firing order.
The masked goldens come from the reference's ``net(x, mask, zeros)``, which equals ``net(x * (1 - mask))``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import apply_weight_rule, forward_recording, load_json, load_tensors, within
from ramir.archs import MODEL_CONFIGS, create_model
from ramir.archs.restormer import RAMRestormer
from ramir.checkpoints import detect_architecture, load_checkpoint, load_network, registered_name
from ramir.errors import CheckpointError, ConfigError
from ramir.layers import attributable_layers
from ramir.masking import apply_mask

CONFIGS = {"small": "ram-restormer-small", "default": "ram-restormer"}
# Bounds: 4x the largest error measured under torch's default, AVX2 and AVX-512 kernels
# (ATEN_CPU_CAPABILITY) on 1 and 2 threads, float64 ones 100x (benchmarks/golden_spread.py,
# docs/robustness.md). The float32 outputs run the fast path (fast_layout: channels-last, oneDNN).
# Of max|y|: measured 7.17e-7 (small) and 1.29e-6 (default, default kernels); the reference's own fp32-fp64
# gap is 4.5e-7 (small) / 3.1e-7 (default)
FP32_REL = {"small": 2.9e-6, "default": 5.2e-6}
FP64_REL = 8.1e-14  # float64 outputs, of max|y|: rounding order only, measured 8.04e-16 (avx2)
# per-layer statistics in float64: the sum relative to |sum| + mean|.| * numel (the L1 mass of what is
# summed: sums near zero), mean |.| and max |.| relative to themselves, the first values to max |.|;
# measured 3.19e-13 (the first values, avx2)
STATS_REL = 3.2e-11
GRAD_REL = 1e-6  # float32 gradients with and without activation checkpointing: bit-identical at every setting


def _rampp(name: str) -> str:
    return f"rampp/{name}"


def _rel_max_diff(y: torch.Tensor, golden: torch.Tensor, scale: float) -> float:
    assert y.shape == golden.shape
    return (y.double() - golden.double()).abs().max().item() / scale


Records = list[tuple[str, torch.Tensor]]  # (layer name, its float64 output) in firing order


@dataclass
class Run:
    """Everything one configuration's tests compare, computed once per module."""

    tag: str
    manifest: dict
    ref: dict
    gold: dict[str, torch.Tensor]
    fp32_state: dict[str, torch.Tensor]
    model32: RAMRestormer
    outputs32: dict[str, torch.Tensor]
    outputs64: dict[str, torch.Tensor]
    layers64: Records


def _forward_recording(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Records]:
    """``model(x)`` keeping every attributable layer's output (float64)."""
    return forward_recording(model, x, lambda out: out.detach().double().clone())


@pytest.fixture(scope="module", params=list(CONFIGS))
def run(request, forward_inputs) -> Run:
    tag = request.param
    model = create_model(CONFIGS[tag]).eval()
    apply_weight_rule(model)
    fp32_state = {k: v.clone() for k, v in model.state_dict().items()}
    x, mask = forward_inputs["x"], forward_inputs["mask"]
    x64_input = load_tensors(_rampp("inputs_rampp.safetensors"))["x_64"]
    with torch.no_grad():
        outputs32 = {"y": model(x), "y_masked": model(apply_mask(x, mask)), "y_x64": model(x64_input)}
    model64 = create_model(CONFIGS[tag]).eval()
    model64.load_state_dict(fp32_state)
    model64.double()
    y64, layers64 = _forward_recording(model64, x.double())
    with torch.no_grad():
        y64_masked = model64(apply_mask(x.double(), mask))
    return Run(
        tag, load_json(_rampp(f"manifest_restormer_{tag}.json")),
        load_json(_rampp(f"forward_restormer_{tag}.json")),
        load_tensors(_rampp(f"forward_restormer_{tag}.safetensors")), fp32_state, model, outputs32,
        {"y_fp64": y64, "y_masked_fp64": y64_masked}, layers64,
    )


# ------------------------------------------------------------------------------------------------
# Layout: keys, shapes, order, layers


def test_state_dict_matches_manifest(run: Run):
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in run.fp32_state.items()]
    assert ours == [(e["key"], e["shape"], e["dtype"]) for e in run.manifest["state_dict"]]
    assert [n for n, _ in run.model32.named_parameters()] == run.manifest["named_parameters_order"]
    assert sum(p.numel() for p in run.model32.parameters()) == run.manifest["num_parameters"]
    assert len(list(run.model32.buffers())) == 0  # the reference's zero mask_token is not state either


def test_attributable_layers_match_manifest(run: Run):
    names = attributable_layers(run.model32)
    assert len(names) == run.manifest["mac_layer_count"] == {"small": 82, "default": 406}[run.tag]
    assert names == [e["name"] for e in run.manifest["mac_layers"]]
    classes = [type(run.model32.get_submodule(n)).__name__ for n in names]
    assert classes == [e["cls"] for e in run.manifest["mac_layers"]]
    assert Counter(classes) == run.manifest["mac_layer_class_counts"]


def test_weight_rule_checksums(run: Run):
    per_param = run.ref["weight_rule_per_param"]
    assert set(per_param) == set(run.fp32_state)
    for name, expected in per_param.items():
        t = run.fp32_state[name]
        assert list(t.shape) == expected["shape"], name
        assert math.isclose(t.double().sum().item(), expected["sum_fp64"], rel_tol=1e-9, abs_tol=1e-9), name
        assert t.reshape(-1)[:3].double().tolist() == expected["first3"], name


def test_constructor_kwargs_of_the_reference_are_accepted(run: Run):
    kwargs = run.manifest["constructor_kwargs_effective"]
    model = create_model("restormer", **kwargs)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (e["key"], e["shape"]) for e in run.manifest["state_dict"]
    ]


# ------------------------------------------------------------------------------------------------
# Outputs


@pytest.mark.golden
@pytest.mark.parametrize("key", ["y", "y_masked", "y_x64"])
def test_fp32_outputs_match_reference(run: Run, key: str):
    y = run.outputs32[key]
    assert y.dtype == torch.float32 and y.is_contiguous()
    scale = run.gold[key].abs().max().item()
    within(f"restormer-{run.tag} {key} fp32 vs fp32 golden (of max|y|)",
           _rel_max_diff(y, run.gold[key], scale), FP32_REL[run.tag])
    if key != "y_x64":
        within(f"restormer-{run.tag} {key} fp32 vs fp64 golden (of max|y|)",
               _rel_max_diff(y, run.gold[key + "_fp64"], scale), FP32_REL[run.tag])


def test_masking_changes_the_output(run: Run):
    """So the masked comparison does tell the two inputs apart."""
    scale = run.gold["y"].abs().max().item()
    assert _rel_max_diff(run.outputs32["y"], run.outputs32["y_masked"], scale) > 100 * FP32_REL[run.tag]


@pytest.mark.golden
@pytest.mark.parametrize("key", ["y_fp64", "y_masked_fp64"])
def test_fp64_outputs_match_reference(run: Run, key: str):
    y = run.outputs64[key]
    assert y.dtype == torch.float64
    within(f"restormer-{run.tag} {key} vs golden (of max|y|)",
           _rel_max_diff(y, run.gold[key], run.gold[key].abs().max().item()), FP64_REL)


@pytest.mark.golden
def test_every_layer_output_matches_reference_stats(run: Run):
    """Each attributable layer fires once with the reference's output (the stats are stored in the
    layer order of ``attributable_layers``, not in firing order: a module fires after its children)."""
    expected = run.ref["mac_layer_output_stats_unmasked_fp64"]
    assert [e["name"] for e in expected] == attributable_layers(run.model32)
    fired = dict(run.layers64)
    assert len(fired) == len(run.layers64) == len(expected)
    worst = {"sum": 0.0, "mean|.|": 0.0, "max|.|": 0.0, "first4": 0.0}  # relative to its scale, worst layer
    for exp in expected:
        name, out = exp["name"], fired[exp["name"]]
        assert list(out.shape) == exp["shape"], name
        flat = out.reshape(-1)
        mass = exp["mean_abs"] * flat.numel()
        errors = {"sum": abs(flat.sum().item() - exp["sum"]) / (abs(exp["sum"]) + mass),
                  "mean|.|": abs(flat.abs().mean().item() - exp["mean_abs"]) / exp["mean_abs"],
                  "max|.|": abs(flat.abs().max().item() - exp["max_abs"]) / exp["max_abs"],
                  "first4": max(abs(a - b) for a, b in zip(flat[:4].tolist(), exp["first4"], strict=True))
                  / exp["max_abs"]}
        worst = {k: max(v, errors[k]) for k, v in worst.items()}
    for what, error in worst.items():
        within(f"restormer-{run.tag} layer {what} fp64 vs golden", error, STATS_REL)


def test_default_config_counts():
    with torch.device("meta"):
        model = create_model("ram-restormer")
    assert sum(p.numel() for p in model.parameters()) == 26_126_644
    assert len(list(model.parameters())) == 494
    counts = Counter(type(model.get_submodule(n)).__name__ for n in attributable_layers(model))
    assert counts == {"Conv2d": 274, "WithBias_LayerNorm": 88, "Attention": 44}


# ------------------------------------------------------------------------------------------------
# Reference checkpoints


def _manifest_state_dict(tag: str) -> dict[str, torch.Tensor]:
    """The manifest's keys and shapes as zero-strided views (no memory)."""
    entries = load_json(_rampp(f"manifest_restormer_{tag}.json"))["state_dict"]
    return {e["key"]: torch.zeros(()).expand(e["shape"]) for e in entries}


@pytest.mark.parametrize("tag", list(CONFIGS))
def test_detection_from_manifest_shapes(tag: str):
    spec = detect_architecture(_manifest_state_dict(tag))
    assert spec.arch == "restormer"
    assert spec.kwargs == MODEL_CONFIGS[CONFIGS[tag]].kwargs
    assert registered_name(spec) == CONFIGS[tag]


@pytest.mark.golden
def test_reference_pth_loads_strictly_and_reproduces_golden(tmp_path, forward_inputs):
    model = create_model("ram-restormer-small")
    apply_weight_rule(model)
    path = tmp_path / "RestormerWoSkip.pth"
    torch.save({"params": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "reference" and registered_name(ckpt.spec) == "ram-restormer-small"
    net = load_network(path)
    assert isinstance(net, RAMRestormer) and not net.training
    golden = load_tensors(_rampp("forward_restormer_small.safetensors"))["y_fp64"]
    with torch.no_grad():
        y = net(forward_inputs["x"])
    within("restormer-small reference .pth, fp32 vs fp64 golden (of max|y|)",
           _rel_max_diff(y, golden, golden.abs().max().item()), FP32_REL["small"])


def test_non_default_restormer_is_detected():
    kwargs = dict(dim=24, num_blocks=[2, 1, 1, 3], num_refinement_blocks=2, heads=[2, 2, 4, 4],
                  ffn_expansion_factor=2.0, bias=True, LayerNorm_type="BiasFree")
    with torch.device("meta"):
        sd = create_model("restormer", **kwargs).state_dict()
    spec = detect_architecture(sd)
    assert spec.arch == "restormer" and spec.kwargs == kwargs


def test_promptir_is_still_promptir():
    with torch.device("meta"):
        for decoder in (True, False):
            sd = create_model("promptir", decoder=decoder, num_blocks=[1, 1, 1, 1]).state_dict()
            assert detect_architecture(sd).arch == "promptir"


def test_strict_loading_names_missing_and_unexpected_keys():
    sd = create_model("ram-restormer-small").state_dict()
    sd.pop("refinement.0.ffn.project_out.weight")
    sd["dr_adaptation1.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: refinement\.0\.ffn\.project_out\.weight.*"
                                              r"unexpected keys: dr_adaptation1\.0\.weight"):
        load_network(sd)


# ------------------------------------------------------------------------------------------------
# Behaviour beyond the fixtures


@pytest.mark.parametrize("size", [(16, 16), (17, 33), (5, 7), (1, 3)])
def test_pads_and_crops_any_size_and_backpropagates(size):
    torch.manual_seed(0)
    model = create_model("ram-restormer-small")
    x = torch.randn(2, 3, *size, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.abs().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert model.size_multiple == 16


def test_no_global_skip():
    """With a zero last conv the output is zero, whatever the input (a residual net would return it)."""
    model = create_model("ram-restormer-small").eval()
    with torch.no_grad():
        model.output.weight.zero_()
        assert torch.count_nonzero(model(torch.randn(1, 3, 20, 24))) == 0


@pytest.mark.golden
def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.randn(1, 3, 16, 16)
    grads = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = create_model("ram-restormer-small", use_checkpoint=use_checkpoint).train()
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    worst = max(_rel_max_diff(grads[1][n], g, max(g.abs().max().item(), 1e-30)) for n, g in grads[0].items())
    within("restormer activation checkpointing, gradients (of max|grad|)", worst, GRAD_REL)


@pytest.mark.parametrize("kwargs", [dict(dim=15), dict(LayerNorm_type="Layer"), dict(heads=(1, 2, 5, 8)),
                                    dict(num_blocks=(1, 1, 1)), dict(dim=6, heads=(4, 2, 4, 8))])
def test_bad_configs_fail_at_construction(kwargs):
    with pytest.raises(ValueError, match="RAM-Restormer") as info:
        RAMRestormer(**kwargs)
    assert isinstance(info.value, ConfigError)
