"""PromptIR against the reference fixtures: layout, weight rule, outputs and every layer's output.

Under the fixtures' weight rule PromptIR's final output barely depends on its transformer blocks
(fixtures README §3.6: zeroing all attention changes it by 1.6e-4 of max|y| = 19.9), so an output
comparison alone cannot see a wrong attention or FFN. The exact checks are therefore done in float64
(``model.double()``): the final output against ``y_fp64`` / ``y_masked_fp64`` and every attributable
layer's output against ``mac_layer_output_stats_unmasked_fp64`` (shape, sum, mean |.|, first values),
in the order the layers run. Float32 is checked against the float64 goldens at its measured error
(3.4e-6 of max|y|, below the 1.6e-4 that the attention makes).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from conftest import apply_weight_rule, forward_recording, load_json, load_tensors, within
from ramir.archs import create_model
from ramir.archs.common import straightforward_path
from ramir.archs.promptir import BiasFree_LayerNorm, PromptIR
from ramir.devices import cpu_bf16_problem
from ramir.errors import ConfigError
from ramir.layers import attributable_layers
from ramir.masking import apply_mask

CONFIGS = {"small": "promptir-small", "default": "promptir"}

# Bounds: 4x the largest error measured under torch's default, AVX2 and AVX-512 kernels
# (ATEN_CPU_CAPABILITY) on 1 and 2 threads, float64 ones 100x (benchmarks/golden_spread.py,
# docs/robustness.md).
# float64 outputs differ from the reference's by rounding order only: measured 3.57e-16 of max|y|.
FP64_REL = 3.6e-14
FP32_REL = 3.4e-6  # float32 vs float64 goldens, of max|y|; measured 8.49e-7 (the reference's own gap: 8e-7)
# Per-layer statistics of the float64 model against the float64 reference stats. A layer's sum can be near
# zero (attention outputs sum to ~1e-3 over 250k elements), so its error is taken relative to
# |sum| + mean_abs * numel (the L1 mass of what is summed); mean |.| and the first values to mean |.|.
STATS_REL = 3.4e-10  # measured 3.33e-12 (the first values, avx2)
# float64 fast vs literal path and batch vs one image: outputs (of max|y|), every layer's sums (of their L1
# mass); measured 0 (default models) and 3.25e-15 (a batch of two, avx512)
FAST64_REL = 3.3e-13
FAST_REL = 9.5e-6  # float32 fast paths (attention splits, bands) vs literal / whole maps; measured 2.36e-6
GRAD_REL = 1e-6  # float32 gradients with and without activation checkpointing: bit-identical at every setting


@dataclass
class LayerRecord:
    shape: list[int]
    sum: float
    mean_abs: float
    first4: list[float]
    fingerprint: float  # sum of the output times a fixed pseudo-random vector: order-sensitive


Records = list[tuple[str, LayerRecord]]  # (layer name, its output) in the order the hooks fired


@dataclass
class Run:
    """Everything one configuration's tests compare, computed once per module."""

    tag: str
    model: PromptIR  # float64 after the fixture
    manifest: dict
    ref: dict
    gold: dict[str, torch.Tensor]
    fp32_state: dict[str, torch.Tensor]
    y32: torch.Tensor
    y32_masked: torch.Tensor
    y64: torch.Tensor
    y64_masked: torch.Tensor
    y64_literal: torch.Tensor
    layers: Records = field(default_factory=list)
    layers_literal: Records = field(default_factory=list)


def _fingerprint_weights(n: int) -> torch.Tensor:
    return torch.sin(0.37 * torch.arange(n, dtype=torch.float64) + 1.0)


def _record(out: torch.Tensor) -> LayerRecord:
    flat = out.detach().to(torch.float64).reshape(-1)  # logical (row-major) order, any memory layout
    return LayerRecord(
        shape=list(out.shape),
        sum=flat.sum().item(),
        mean_abs=flat.abs().mean().item(),
        first4=flat[:4].tolist(),
        fingerprint=(flat * _fingerprint_weights(flat.numel())).sum().item(),
    )


def _forward_recording(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Records]:
    """Run ``model(x)`` keeping a :class:`LayerRecord` of every attributable layer, in firing order."""
    return forward_recording(model, x, _record)


@pytest.fixture(scope="module", params=list(CONFIGS))
def run(request, forward_inputs) -> Run:
    tag = request.param
    model = create_model(CONFIGS[tag]).eval()
    apply_weight_rule(model)
    x, mask = forward_inputs["x"], forward_inputs["mask"]
    fp32_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y32 = model(x)
        y32_masked = model(apply_mask(x, mask))
    model.double()
    x64 = x.double()
    y64, layers = _forward_recording(model, x64)
    with torch.no_grad():
        y64_masked = model(apply_mask(x64, mask))
    with straightforward_path():
        y64_literal, layers_literal = _forward_recording(model, x64)
    return Run(
        tag, model, load_json(f"manifest_promptir_{tag}.json"), load_json(f"forward_promptir_{tag}.json"),
        load_tensors(f"forward_promptir_{tag}.safetensors"), fp32_state, y32, y32_masked, y64, y64_masked,
        y64_literal, layers, layers_literal,
    )


# ------------------------------------------------------------------------------------------------
# Layout: keys, shapes, order, layers


def test_state_dict_matches_manifest(run: Run):
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in run.fp32_state.items()]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in run.manifest["state_dict"]]
    assert ours == theirs
    assert [n for n, _ in run.model.named_parameters()] == run.manifest["named_parameters_order"]
    assert sum(p.numel() for p in run.model.parameters()) == run.manifest["num_parameters"]
    assert len(list(run.model.buffers())) == 0


def test_attributable_layers_match_manifest(run: Run):
    names = attributable_layers(run.model)
    assert names == [e["name"] for e in run.manifest["mac_layers"]]
    classes = [type(run.model.get_submodule(n)).__name__ for n in names]
    assert classes == [e["cls"] for e in run.manifest["mac_layers"]]


def test_default_config_counts():
    model = create_model("promptir")
    assert sum(p.numel() for p in model.parameters()) == 35_376_967
    names = attributable_layers(model)
    counts = Counter(type(model.get_submodule(n)).__name__ for n in names)
    assert len(names) == 445
    assert counts == {"Conv2d": 298, "WithBias_LayerNorm": 94, "Attention": 47, "PromptGenBlock": 3,
                      "Linear": 3}


def test_weight_rule_checksums(run: Run):
    per_param = run.ref["weight_rule_per_param"]
    assert set(per_param) == set(run.fp32_state)
    for name, expected in per_param.items():
        t = run.fp32_state[name]
        assert list(t.shape) == expected["shape"], name
        assert math.isclose(t.double().sum().item(), expected["sum_fp64"], rel_tol=1e-9, abs_tol=1e-9), name
        assert t.reshape(-1)[:3].double().tolist() == expected["first3"], name


# ------------------------------------------------------------------------------------------------
# Outputs


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.golden
def test_fp64_outputs_match_reference(run: Run):
    scale = run.gold["y_fp64"].abs().max().item()
    assert run.y64.dtype == torch.float64
    within(f"promptir-{run.tag} y fp64 vs golden (of max|y|)", _max_diff(run.y64, run.gold["y_fp64"]) / scale,
           FP64_REL)
    within(f"promptir-{run.tag} y_masked fp64 vs golden (of max|y|)",
           _max_diff(run.y64_masked, run.gold["y_masked_fp64"]) / scale, FP64_REL)


@pytest.mark.golden
def test_fp32_outputs_match_fp64_reference(run: Run):
    scale = run.gold["y_fp64"].abs().max().item()
    assert run.y32.dtype == torch.float32 and run.y32.is_contiguous()
    within(f"promptir-{run.tag} y fp32 vs fp64 golden (of max|y|)",
           _max_diff(run.y32, run.gold["y_fp64"]) / scale, FP32_REL)
    within(f"promptir-{run.tag} y_masked fp32 vs fp64 golden (of max|y|)",
           _max_diff(run.y32_masked, run.gold["y_masked_fp64"]) / scale, FP32_REL)
    # masking changes the output a lot, so these comparisons do tell the two inputs apart
    assert _max_diff(run.y32, run.y32_masked) > 100 * FP32_REL * scale


@pytest.mark.golden
def test_every_layer_output_matches_reference_stats(run: Run):
    """Each attributable layer fires once, in the reference's order, with the reference's output."""
    expected = run.ref["mac_layer_output_stats_unmasked_fp64"]
    assert [n for n, _ in run.layers] == [e["name"] for e in expected]
    worst = {"sum": 0.0, "mean|.|": 0.0, "first4": 0.0}  # each relative to its scale, the worst layer
    for (name, got), exp in zip(run.layers, expected, strict=True):
        assert got.shape == exp["shape"], name
        mass = exp["mean_abs"] * math.prod(exp["shape"])
        worst["sum"] = max(worst["sum"], abs(got.sum - exp["sum"]) / (abs(exp["sum"]) + mass))
        worst["mean|.|"] = max(worst["mean|.|"], abs(got.mean_abs - exp["mean_abs"]) / exp["mean_abs"])
        first4 = max(abs(a - b) for a, b in zip(got.first4, exp["first4"], strict=True)) / exp["mean_abs"]
        worst["first4"] = max(worst["first4"], first4)
    for what, error in worst.items():
        within(f"promptir-{run.tag} layer {what} fp64 vs golden", error, STATS_REL)


@pytest.mark.golden
def test_fast_path_equals_straightforward_path(run: Run):
    scale = run.y64_literal.abs().max().item()
    within(f"promptir-{run.tag} fp64 fast vs literal (of max|y|)",
           _max_diff(run.y64, run.y64_literal) / scale, FAST64_REL)
    assert [n for n, _ in run.layers] == [n for n, _ in run.layers_literal]
    worst = 0.0
    for (name, fast), (_, lit) in zip(run.layers, run.layers_literal, strict=True):
        assert fast.shape == lit.shape, name
        size = lit.mean_abs * math.prod(lit.shape) + 1e-300  # sum of |x|: the scale of every sum below
        worst = max(worst, abs(fast.sum - lit.sum) / size, abs(fast.fingerprint - lit.fingerprint) / size,
                    abs(fast.mean_abs - lit.mean_abs) / (lit.mean_abs + 1e-300))
    within(f"promptir-{run.tag} fp64 fast vs literal, layer sums and fingerprints", worst, FAST64_REL)


@pytest.mark.golden
@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_fast_path_in_both_layouts(channels_last: bool):
    """The GPU runs channel-major maps, the CPU channels-last ones: both fast splits equal the literal one."""
    attn = _tiny_model().encoder_level1[0].attn
    x = torch.randn(2, attn.qkv.in_channels, 12, 20, generator=torch.Generator().manual_seed(5))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = attn(x)
        with straightforward_path():
            slow = attn(x)
    within("promptir attention fast vs literal (of max|y|)", _max_diff(fast, slow) / slow.abs().max().item(),
           FAST_REL)


def test_modules_return_their_last_childs_tensor():
    """MAC ties (README §3.3): Attention returns project_out's tensor, PromptGenBlock conv3x3's."""
    model = _tiny_model().eval()
    seen: dict[str, torch.Tensor] = {}
    for name in ("encoder_level1.0.attn", "encoder_level1.0.attn.project_out", "prompt2", "prompt2.conv3x3"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        model(torch.randn(1, 3, 20, 24))
    assert seen["encoder_level1.0.attn"] is seen["encoder_level1.0.attn.project_out"]
    assert seen["prompt2"] is seen["prompt2.conv3x3"]


# ------------------------------------------------------------------------------------------------
# Behaviour beyond the fixtures (small, cheap models)


def _tiny_model(**overrides) -> PromptIR:
    kwargs = dict(num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, prompt_dims=(8, 8, 8), prompt_len=3,
                  prompt_sizes=(8, 6, 4))
    kwargs.update(overrides)
    torch.manual_seed(0)
    return PromptIR(**kwargs)


def test_prompt_sizes_are_configurable():
    model = _tiny_model()
    sd = model.state_dict()
    assert sd["prompt1.prompt_param"].shape == (1, 3, 8, 8, 8)
    assert sd["prompt3.prompt_param"].shape == (1, 3, 8, 4, 4)
    assert sd["prompt2.linear_layer.weight"].shape == (3, 192)
    assert sd["noise_level3.norm1.body.weight"].shape == (384 + 8,)
    assert sd["reduce_noise_level1.weight"].shape == (96, 96 + 8, 1, 1)


@pytest.mark.parametrize("size", [(16, 16), (17, 33), (5, 7), (1, 3)])
def test_pads_and_crops_any_size(size):
    model = _tiny_model().eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.golden
def test_batch_equals_single_images_and_paths_agree():
    """Batched forward (prompt weights per sample, per-sample attention) equals one-by-one, in float64;
    the straightforward path agrees on a batch too."""
    model = _tiny_model().double().eval()
    with torch.no_grad():
        for p in model.parameters():  # larger, varied weights so blocks and prompts matter
            p.copy_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 20, 36, dtype=torch.float64)
    with torch.no_grad():
        both = model(x)
        single = torch.cat([model(x[:1]), model(x[1:])])
        with straightforward_path():
            literal = model(x)
    scale = both.abs().max().item()
    within("promptir fp64 batch vs one image (of max|y|)", _max_diff(both, single) / scale, FAST64_REL)
    within("promptir fp64 batch fast vs literal (of max|y|)", _max_diff(both, literal) / scale, FAST64_REL)
    assert _max_diff(both[0], both[1]) > 1e-3 * scale


def test_bias_free_layer_norm():
    model = _tiny_model(LayerNorm_type="BiasFree").eval()
    assert isinstance(model.encoder_level1[0].norm1.body, BiasFree_LayerNorm)
    assert "encoder_level1.0.norm1.body.bias" not in model.state_dict()
    body = BiasFree_LayerNorm(6)
    with torch.no_grad():
        body.weight.copy_(torch.arange(1.0, 7.0))
    t = torch.randn(2, 5, 6) + 3.0
    expected = t / torch.sqrt(t.var(-1, keepdim=True, unbiased=False) + 1e-5) * body.weight
    torch.testing.assert_close(body(t), expected)
    assert body(t).mean() > 1.0  # the mean is not removed
    with torch.no_grad():
        y = model(torch.randn(1, 3, 16, 20))
    assert torch.isfinite(y).all()


def test_decoder_false_has_no_prompts_and_runs():
    model = _tiny_model(decoder=False).eval()
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert not any(n.startswith(("prompt", "noise_level")) for n in names)
    assert model.reduce_noise_level3.weight.shape == (192, 384, 1, 1)
    with torch.no_grad():
        y = model(torch.randn(1, 3, 19, 21))
    assert y.shape == (1, 3, 19, 21)
    classes = {type(model.get_submodule(n)).__name__ for n in attributable_layers(model)}
    assert "PromptGenBlock" not in classes and "Linear" not in classes


@pytest.mark.parametrize("kwargs", [dict(dim=32), dict(LayerNorm_type="Layer"), dict(heads=(1, 2, 5, 8)),
                                    dict(num_blocks=(1, 1, 1))])
def test_bad_configs_fail_at_construction(kwargs):
    with pytest.raises(ValueError, match="PromptIR") as info:
        PromptIR(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_reference_only_kwargs_are_accepted():
    model = _tiny_model(finetune_type=None, img_size=64, inp_channels=3, out_channels=3, bias=False)
    assert not hasattr(model, "mask_token")


@pytest.mark.golden
def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.randn(1, 3, 16, 16)
    grads = []
    for use_checkpoint in (False, True):
        model = _tiny_model(use_checkpoint=use_checkpoint).train()
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    worst = max(_max_diff(grads[1][n], g) / max(g.abs().max().item(), 1e-30) for n, g in grads[0].items())
    within("promptir activation checkpointing, gradients (of max|grad|)", worst, GRAD_REL)


@pytest.mark.golden
@pytest.mark.parametrize("bias", [False, True])
def test_band_wise_inference_equals_whole_maps(monkeypatch, bias):
    """Unobserved float32 inference runs each transformer block on bands of rows (with the 3x3 convs'
    halo): same numbers as the whole-map path, which autograd or any hook forces; ragged last bands,
    one-row bands and a batch included; with and without conv biases (the band path splits the FFN's
    convs into halves and accumulates the 1x1 projections into the output)."""
    from ramir.archs import promptir as promptir_mod

    model = _tiny_model(num_blocks=(2, 1, 1, 1), bias=bias).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger, varied weights so the blocks matter
            p.copy_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(5))
    calls: Counter = Counter()
    for cls in (promptir_mod.Attention, promptir_mod.FeedForward):
        original = cls._forward_bands

        def counting(self, *args, _original=original, _name=cls.__name__, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "_forward_bands", counting)
    whole = model(x).detach()  # autograd on: whole maps
    assert not calls
    outputs = {}
    for pixels in (100, 56, 1):  # 1 -> one row per band at every level
        monkeypatch.setattr(promptir_mod, "BAND_PIXELS", pixels)
        with torch.no_grad():
            outputs[pixels] = model(x)
    blocks = sum(isinstance(m, promptir_mod.TransformerBlock) for m in model.modules())
    assert calls == {"Attention": 3 * blocks, "FeedForward": 3 * blocks}
    with torch.no_grad():
        handle = model.encoder_level1[1].ffn.project_out.register_forward_hook(lambda m, i, o: None)
        hooked = model(x)  # that block and its FFN run whole; its attention and the other blocks in bands
        handle.remove()
    assert calls == {"Attention": 4 * blocks, "FeedForward": 4 * blocks - 1}
    scale = whole.abs().max().item()
    worst = max(_max_diff(y, whole) for y in [*outputs.values(), hooked]) / scale
    within(f"promptir bands vs whole maps, bias={bias} (of max|y|)", worst, FAST_REL)
    assert _max_diff(whole, torch.zeros_like(whole)) > 0


@pytest.mark.skipif(cpu_bf16_problem() is not None, reason="no bf16 in these torch CPU kernels")
def test_band_wise_inference_under_bf16_autocast():
    """Under autocast the 1x1 projections run as modules (lower precision) and are then added: the
    in-place GEMM accumulation needs one dtype."""
    model = _tiny_model(bias=True).eval()
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert _max_diff(low.float(), reference) <= 0.05 * reference.abs().max().item()


def test_layer_outputs_keep_their_layout_under_inference_with_hooks():
    """Hooks (as MAC uses them) always see whole maps, also without autograd."""
    model = _tiny_model().eval()
    shapes = {}
    names = ("encoder_level1.0.attn.qkv", "encoder_level1.0.ffn.dwconv", "encoder_level1.0.norm1.body")
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 48))
    assert shapes == {names[0]: (1, 144, 32, 48), names[1]: (1, 254, 32, 48), names[2]: (1, 32 * 48, 48)}
