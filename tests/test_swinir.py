"""RAM-SwinIR against the reference fixtures: structure, buffers, weights, outputs, layer by layer.

The default configuration (11.5M parameters) is built once per module (a module-scoped parametrised
fixture; pytest groups the tests by configuration) and run three times at 61x70: fp32 unmasked, fp32
masked, and fp64 with hooks on all 263 attributable layers.

Tolerances: every bound is 4x the largest error measured under torch's default, AVX2 and AVX-512 kernels
(``ATEN_CPU_CAPABILITY``) on 1 and 2 threads, float64 ones 100x (``benchmarks/golden_spread.py``; the
table is in docs/robustness.md):
* outputs (fp32 model) vs the fp64 goldens, of max|y|;
* layer statistics of a float64 model. A fixed relative tolerance fails for sums that cancel to near zero,
  so each sum's error is taken relative to ``|ref| + mean_abs * numel`` (relative where the sum is large,
  relative to the L1 mass of the output where it cancels); mean_abs and the first 4 values relative to
  mean_abs.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import apply_weight_rule, load_json, load_tensors, within
from ramir import attributable_layers, create_model
from ramir.archs import swinir as swinir_mod
from ramir.archs.common import straightforward_path
from ramir.archs.swinir import SwinIR
from ramir.devices import cpu_bf16_problem
from ramir.masking import apply_mask

MODEL_NAMES = {"small": "ram-swinir-small", "default": "ram-swinir"}
# of max|y|, fp32 model vs the fp64 golden; measured 1.21e-6 (small) and 1.77e-5 (default), default kernels
OUTPUT_REL = {"small": 4.9e-6, "default": 7.1e-5}
STATS_REL = 2.1e-11  # float64 layer statistics; measured 2.07e-13 (first values, default kernels); 100x
Y_FULL_REL = 4.1e-6  # 64x64 (the stored masks) vs the MAC fixture's y_full, of max|y|; measured 1.02e-6
# fp32 fast path (chunked, piecewise, cached, dense SDPA) vs the straightforward path or whole maps, max
# |diff| (|y| ~ 3): measured at most 1.55e-6 (piecewise with biases, default kernels); 0 where both run the
# same kernels (batch vs one image, hooks, checkpointing)
FAST_ABS = 6.2e-6
GRAD_REL = 2e-6  # fp32 gradients of two paths, of max|grad|; measured 4.88e-7 (fast vs straightforward, avx2)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _grad_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return _max_abs(a, b) / max(b.abs().max().item(), 1e-30)


# ------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["small", "default"])
def rule_net(request) -> tuple[str, torch.nn.Module]:
    """(tag, network built by create_model, rule weights, eval mode) — built once per configuration."""
    tag = request.param
    net = create_model(MODEL_NAMES[tag]).eval()
    apply_weight_rule(net)
    return tag, net


_RUNS: dict[str, dict] = {}


def golden_run(tag: str, net: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> dict:
    """The expensive forwards of one configuration, computed once and shared by the tests."""
    if tag not in _RUNS:
        with torch.no_grad():
            y = net(x)
            y_masked = net(apply_mask(x, mask))
            stats = layer_output_stats(copy.deepcopy(net).double(), x.double())
        _RUNS[tag] = {"y": y, "y_masked": y_masked, "stats": stats}
    return _RUNS[tag]


def layer_output_stats(net: torch.nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """Shape, float64 sum, mean |.| and first 4 values of every attributable layer's output (hooks)."""
    stats: dict[str, dict] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            o = output.detach().double()
            stats[name] = {"shape": list(o.shape), "sum": o.sum().item(), "mean_abs": o.abs().mean().item(),
                           "first4": o.flatten()[:4].tolist()}
        return hook

    handles = [net.get_submodule(n).register_forward_hook(hook_for(n)) for n in attributable_layers(net)]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def small_net(**overrides) -> SwinIR:
    torch.manual_seed(0)
    return create_model("ram-swinir-small", **overrides).eval()


def reference_position_index(ws: int) -> np.ndarray:
    """Relative-position index by brute force over query/key pairs."""
    n = ws * ws
    out = np.zeros((n, n), dtype=np.int64)
    for a in range(n):
        for b in range(n):
            dy, dx = a // ws - b // ws, a % ws - b % ws
            out[a, b] = (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
    return out


def reference_shift_mask(h: int, w: int, ws: int, shift: int) -> np.ndarray:
    """Shifted-window mask: label the 3x3 regions by slices, compare labels window by window."""
    labels = np.zeros((h, w))
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, hs in enumerate(cuts):
        for j, wsl in enumerate(cuts):
            labels[hs, wsl] = 3 * i + j
    masks = []
    for r in range(0, h, ws):
        for c in range(0, w, ws):
            lab = labels[r : r + ws, c : c + ws].reshape(-1)
            masks.append(np.where(lab[:, None] != lab[None, :], -100.0, 0.0))
    return np.stack(masks).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# structure
# ------------------------------------------------------------------------------------------------


def test_state_dict_matches_manifest(rule_net):
    tag, net = rule_net
    manifest = load_json(f"manifest_swinir_{tag}.json")
    params = dict(net.named_parameters())
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch."), "parameter" if k in params else "buffer")
           for k, v in net.state_dict().items()]
    want = [(e["key"], e["shape"], e["dtype"], e["kind"]) for e in manifest["state_dict"]]
    assert got == want
    assert list(params) == manifest["named_parameters_order"]
    assert sum(p.numel() for p in params.values()) == manifest["num_parameters"]
    assert len(list(net.buffers())) == manifest["num_buffers"]


def test_attributable_layers_match_manifest(rule_net):
    tag, net = rule_net
    manifest = load_json(f"manifest_swinir_{tag}.json")
    names = attributable_layers(net)
    assert names == [e["name"] for e in manifest["mac_layers"]]
    classes = [type(net.get_submodule(n)).__name__ for n in names]
    assert classes == [e["cls"] for e in manifest["mac_layers"]]
    assert Counter(classes) == Counter(manifest["mac_layer_class_counts"])
    # the classes are the real torch ones (MAC and fine-tuning code may rely on isinstance)
    for n, cls in zip(names, classes, strict=True):
        expected = {"Linear": torch.nn.Linear, "LayerNorm": torch.nn.LayerNorm, "Conv2d": torch.nn.Conv2d,
                    "WindowAttention": swinir_mod.WindowAttention}[cls]
        assert isinstance(net.get_submodule(n), expected)


# RAM_SPEC §3/§6 and the fixtures README §2: parameters, attributable layers and their classes
EXPECTED_COUNTS = {
    "small": (50_043, 35, {"Linear": 16, "LayerNorm": 10, "WindowAttention": 4, "Conv2d": 5}),
    "default": (11_512_131, 263, {"Linear": 144, "LayerNorm": 74, "WindowAttention": 36, "Conv2d": 9}),
}


def test_create_model_counts(rule_net):
    tag, net = rule_net
    n_params, n_layers, classes = EXPECTED_COUNTS[tag]
    assert sum(p.numel() for p in net.parameters()) == n_params
    layers = attributable_layers(net)
    assert len(layers) == n_layers
    assert Counter(type(net.get_submodule(n)).__name__ for n in layers) == classes


def test_buffers_have_reference_values(rule_net):
    """relative_position_index and attn_mask (0 / -100 for img_size) recomputed independently."""
    tag, net = rule_net
    manifest = load_json(f"manifest_swinir_{tag}.json")
    shapes = {e["key"]: e["shape"] for e in manifest["state_dict"] if e["kind"] == "buffer"}
    sd = net.state_dict()
    ws, img = net.window_size, net.img_size
    rpi = reference_position_index(ws)
    mask = reference_shift_mask(img, img, ws, ws // 2)
    for key, shape in shapes.items():
        value = sd[key]
        assert list(value.shape) == shape
        if key.endswith("relative_position_index"):
            np.testing.assert_array_equal(value.numpy(), rpi)
        else:
            assert key.endswith("attn_mask")
            assert set(np.unique(value.numpy())) == {0.0, -100.0}
            np.testing.assert_array_equal(value.numpy(), mask)


def test_weight_rule_checksums(rule_net):
    tag, net = rule_net
    golden = load_json(f"forward_swinir_{tag}.json")
    per_param = golden["weight_rule_per_param"]
    params = dict(net.named_parameters())
    assert set(params) == set(per_param)
    total = 0.0
    for name, p in params.items():
        want = per_param[name]
        assert list(p.shape) == want["shape"], name
        s = p.detach().double().sum().item()
        total += s
        assert math.isclose(s, want["sum_fp64"], rel_tol=1e-9, abs_tol=1e-12), name
        assert p.detach().flatten()[:3].tolist() == pytest.approx(want["first3"], rel=0, abs=0), name
    assert math.isclose(total, golden["weight_rule_total_sum_fp64"], rel_tol=1e-9, abs_tol=1e-9)


# ------------------------------------------------------------------------------------------------
# numerics against the reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.golden
def test_forward_matches_fp64_golden(rule_net, forward_inputs):
    tag, net = rule_net
    golden = load_tensors(f"forward_swinir_{tag}.safetensors")
    run = golden_run(tag, net, forward_inputs["x"], forward_inputs["mask"])
    for key in ("y", "y_masked"):
        ref = golden[f"{key}_fp64"]
        got = run[key]
        assert got.dtype == torch.float32 and got.shape == ref.shape
        rel = (got.double() - ref).abs().max().item() / ref.abs().max().item()
        within(f"swinir-{tag} {key} fp32 vs fp64 golden (of max|y|)", rel, OUTPUT_REL[tag])


@pytest.mark.golden
def test_layer_outputs_match_golden(rule_net, forward_inputs):
    tag, net = rule_net
    golden = load_json(f"forward_swinir_{tag}.json")["mac_layer_output_stats_unmasked_fp64"]
    stats = golden_run(tag, net, forward_inputs["x"], forward_inputs["mask"])["stats"]
    assert list(stats) == [g["name"] for g in golden]
    worst = {"sum": 0.0, "mean|.|": 0.0, "first4": 0.0}  # each relative to its scale, the worst layer
    for g in golden:
        s, name = stats[g["name"]], g["name"]
        numel = math.prod(g["shape"])
        assert s["shape"] == g["shape"], name
        worst["sum"] = max(worst["sum"], abs(s["sum"] - g["sum"]) / (abs(g["sum"]) + g["mean_abs"] * numel))
        worst["mean|.|"] = max(worst["mean|.|"], abs(s["mean_abs"] - g["mean_abs"]) / g["mean_abs"])
        first4 = np.abs(np.array(s["first4"]) - np.array(g["first4"])).max() / g["mean_abs"]
        worst["first4"] = max(worst["first4"], float(first4))
    for what, error in worst.items():
        within(f"swinir-{tag} layer {what} fp64 vs golden", error, STATS_REL)


def test_attention_returns_proj_output_in_window_layout(forward_inputs):
    """The attention module's output is the proj output tensor itself (the reference's MAC ties)."""
    net = small_net()
    outputs: dict[str, torch.Tensor] = {}
    for name in ("layers.0.residual_group.blocks.1.attn", "layers.0.residual_group.blocks.1.attn.proj"):
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
    with torch.no_grad():
        net(forward_inputs["x"])
    attn, proj = outputs.values()
    assert attn is proj
    assert attn.shape == (72, 64, 24)  # 64x72 padded map -> 8x9 windows of 8x8 tokens


@pytest.mark.golden
def test_img_size_input_uses_stored_masks():
    """At 64x64 (= img_size, no padding) the attn_mask buffers are used: matches the reference's y_full."""
    mac = load_tensors("mac_swinir_small.safetensors")
    net = small_net()
    apply_weight_rule(net)
    with torch.no_grad():
        y = net(mac["x"])
    assert y.shape == (1, 3, 64, 64)
    within("swinir-small 64x64 fp32 vs MAC golden y_full (of max|y|)",
           _max_abs(y, mac["y_full"]) / mac["y_full"].abs().max().item(), Y_FULL_REL)
    # the cached mask for another size follows the same rule as the buffer
    block = net.layers[0].residual_group.blocks[1]
    mask, mixed = block.shift_mask(64, 64 + 8, torch.device("cpu"), torch.float32)
    np.testing.assert_array_equal(mask.numpy(), reference_shift_mask(64, 72, 8, 4))
    nonzero = mask.flatten(1).ne(0).any(1).nonzero().squeeze(1)
    assert sorted(mixed.tolist()) == nonzero.tolist()


# ------------------------------------------------------------------------------------------------
# fast path vs straightforward path, sizes, caches
# ------------------------------------------------------------------------------------------------


@pytest.mark.golden
@pytest.mark.parametrize("size", [(61, 70), (40, 100), (64, 64)])
def test_fast_path_equals_straightforward(size):
    net = small_net()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = net(x)
        with straightforward_path():
            slow = net(x)
        single = net(x[1:])
    assert fast.shape == x.shape
    within("swinir fast vs straightforward", _max_abs(fast, slow), FAST_ABS)
    within("swinir batch vs one image", _max_abs(fast[1:], single), FAST_ABS)  # windows and masks' layout


@pytest.mark.golden
def test_compile_friendly_attention_equals_the_fast_path(monkeypatch):
    """Under tracing/torch.compile the shifted windows use one dense masked SDPA (no data-dependent window
    list, no graph break); it must give the fast path's outputs and gradients."""
    net = small_net()
    x = torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(4))

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        net.zero_grad()
        y = net(x)
        y.square().mean().backward()
        return y.detach(), net.layers[0].residual_group.blocks[1].attn.qkv.weight.grad.clone()

    y_fast, g_fast = run()
    monkeypatch.setattr(swinir_mod, "_caching_allowed", lambda: False)
    y_dense, g_dense = run()
    within("swinir dense masked SDPA vs fast", _max_abs(y_fast, y_dense), FAST_ABS)
    within("swinir dense masked SDPA vs fast, gradient", _grad_rel(g_dense, g_fast), GRAD_REL)


def test_torch_compile_sees_one_graph():
    """No graph break (each one made torch.compile recompile per block and give up, seen on a GPU)."""
    import torch._dynamo as dynamo

    net = small_net().train()
    try:
        explained = dynamo.explain(net)(torch.randn(1, 3, 32, 32))
    finally:
        dynamo.reset()
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.golden
def test_gradients_equal_on_both_paths():
    net = small_net()
    x = torch.randn(2, 3, 24, 30, generator=torch.Generator().manual_seed(2))

    def grads() -> dict[str, torch.Tensor]:
        net.zero_grad()
        net(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    fast = grads()
    with straightforward_path():
        slow = grads()
    assert set(fast) == set(slow) and "mask_token" not in fast  # mask_token is not used by forward
    worst = max(_grad_rel(fast[n], slow[n]) for n in fast)
    within("swinir gradients fast vs straightforward", worst, GRAD_REL)
    assert fast["layers.0.residual_group.blocks.1.attn.relative_position_bias_table"].abs().sum() > 0


@pytest.mark.golden
def test_position_bias_cache_follows_the_table():
    net = small_net()
    attn = net.layers[0].residual_group.blocks[1].attn
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert attn.position_bias() is attn.position_bias()  # cached while it cannot be learned
        y0 = net(x)
        hits = swinir_mod._cached_shift_mask.cache_info().hits
        assert torch.equal(net(x), y0)
        assert swinir_mod._cached_shift_mask.cache_info().hits > hits  # masks not rebuilt
        attn.relative_position_bias_table[5:40].add_(3.0)  # in-place change must invalidate the cache
        y1 = net(x)
        with straightforward_path():
            y1_slow = net(x)
    assert (y1 - y0).abs().max().item() > 100 * FAST_ABS  # (1.06e-3) a stale cache would be seen
    within("swinir cached position bias vs straightforward", _max_abs(y1, y1_slow), FAST_ABS)
    # with autograd on, the bias is gathered from the parameter on every call
    assert attn.position_bias() is not attn.position_bias()
    assert attn.position_bias().requires_grad


@pytest.mark.golden
def test_dtype_and_inference_mode_switches():
    net = small_net()
    x = torch.randn(1, 3, 20, 27, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        y32 = net(x)
    y_grad = net(x)  # tensors cached under inference_mode must not leak into autograd
    y_grad.sum().backward()
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        y64 = net64(x.double())
    assert y64.dtype == torch.float64
    within("swinir fp32 vs fp64 model", _max_abs(y32, y64), FAST_ABS)
    within("swinir inference_mode vs autograd", _max_abs(y_grad.detach(), y32), FAST_ABS)


@pytest.mark.golden
def test_activation_checkpointing_matches():
    kwargs = dict(drop_path_rate=0.0)
    plain, ckpt = small_net(**kwargs).train(), small_net(use_checkpoint=True, **kwargs).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    outs = []
    for net in (plain, ckpt):
        y = net(x)
        y.square().mean().backward()
        outs.append((y.detach(), [p.grad for p in net.parameters() if p.grad is not None]))
    within("swinir activation checkpointing", _max_abs(outs[0][0], outs[1][0]), FAST_ABS)
    grads = [_grad_rel(b, a) for a, b in zip(outs[0][1], outs[1][1], strict=True)]
    within("swinir activation checkpointing, gradients", max(grads), GRAD_REL)


def test_mask_token_is_not_used():
    net = small_net()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        y = net(x)
        net.mask_token.fill_(3.0)
        assert torch.equal(net(x), y)


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------


@pytest.mark.golden
def test_3conv_and_3x3_first_conv():
    net = small_net(resi_connection="3conv", first_type="3x3")
    assert net.conv_first.kernel_size == (3, 3)
    assert isinstance(net.conv_after_body, torch.nn.Sequential)
    layers = attributable_layers(net)
    assert "layers.0.conv.0" in layers and "conv_after_body.4" in layers
    assert Counter(type(net.get_submodule(n)).__name__ for n in layers)["Conv2d"] == 1 + 3 * 2 + 3 + 1
    x = torch.randn(1, 3, 19, 23, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        fast = net(x)
        with straightforward_path():
            slow = net(x)
    assert fast.shape == x.shape
    within("swinir 3conv fast vs straightforward", _max_abs(fast, slow), FAST_ABS)


def test_constructor_defaults_and_finetune_type():
    # window 7, img_size 64 (stored masks for 70x70); kwargs spelled as in the manifests are accepted
    net = SwinIR(depths=(2,), num_heads=(2,), embed_dim=12, finetune_type="anything",
                 norm_layer="nn.LayerNorm")
    assert net.window_size == 7 and net.layers[0].residual_group.blocks[1].attn_mask.shape == (100, 49, 49)
    with torch.no_grad():
        y = net(torch.randn(1, 3, 15, 22))
    assert y.shape == (1, 3, 15, 22)


@pytest.mark.parametrize(
    "kwargs",
    [dict(upsampler="pixelshuffle"), dict(resi_connection="2conv"), dict(first_type="5x5"), dict(ape=True),
     dict(img_range=255.0), dict(patch_size=2), dict(umbed=False), dict(depths=[2, 2], num_heads=[2]),
     dict(norm_layer="BatchNorm")],
)
def test_unsupported_options_raise(kwargs):
    with pytest.raises(ValueError):
        create_model("ram-swinir-small", **kwargs)


def test_unknown_keyword_is_an_error():
    with pytest.raises(TypeError):
        create_model("ram-swinir-small", embed_dims=24)


def test_too_small_input_raises():
    with pytest.raises(ValueError, match="too small"):
        small_net()(torch.zeros(1, 3, 3, 30))


@pytest.mark.golden
def test_chunked_inference_equals_whole_maps(monkeypatch):
    """Unobserved inference runs each block on groups of windows / tokens: same numbers as the whole-map
    path (which any hook forces), for a batch, shifted windows with cached masks and ragged last pieces."""
    net = small_net()
    x = torch.randn(2, 3, 45, 70, generator=torch.Generator().manual_seed(7))  # padded to 48x72: 54 windows
    calls = []
    original = swinir_mod.SwinTransformerBlock._forward_chunked

    def counting(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(swinir_mod.SwinTransformerBlock, "_forward_chunked", counting)
    monkeypatch.setattr(swinir_mod, "CHUNK_TOKENS", 320)  # pieces of at most 5 windows (6x9 windows)
    with torch.no_grad():
        chunked = net(x)
        assert len(calls) == 4  # every block of the two RSTBs
        handle = net.layers[1].residual_group.blocks[0].mlp.fc2.register_forward_hook(lambda m, i, o: None)
        observed_block = net(x)  # the hooked block runs whole, the others still in pieces
        handle.remove()
        assert len(calls) == 4 + 3
        with straightforward_path():
            slow = net(x)
    whole = net(x).detach()  # autograd on: whole maps
    assert len(calls) == 7
    within("swinir chunked vs whole maps", _max_abs(chunked, whole), FAST_ABS)
    within("swinir one block observed vs whole maps", _max_abs(observed_block, whole), FAST_ABS)
    within("swinir chunked vs straightforward", _max_abs(chunked, slow), FAST_ABS)


def randomise_biases_and_norms(net: torch.nn.Module, seed: int) -> None:
    """SwinIR's initialisation zeroes every Linear bias and sets the norms to identity; trained weights
    do not, and the piecewise path treats biases with algebra (folded, dropped, accumulated)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.golden
@pytest.mark.parametrize("chunk_tokens", [1024, 320, 64])
def test_piecewise_inference_with_biases_and_odd_maps(monkeypatch, chunk_tokens):
    """Biases folded into proj / accumulated into the residual, the key bias dropped: same numbers as the
    straightforward path for batches, single-window maps (everything wraps), maps one window high or
    wide, pieces of one window; the caller's input is never written (blocks after the first of a group
    write into their predecessor's private output instead)."""
    net = small_net()
    randomise_biases_and_norms(net, seed=11)
    monkeypatch.setattr(swinir_mod, "CHUNK_TOKENS", chunk_tokens)
    for shape in [(2, 45, 70), (1, 8, 8), (1, 8, 40), (1, 33, 9), (3, 17, 26)]:
        x = torch.randn(*shape[:1], 3, *shape[1:], generator=torch.Generator().manual_seed(sum(shape)))
        before = x.clone()
        with torch.no_grad():
            fast = net(x)
            with straightforward_path():
                slow = net(x)
        assert torch.equal(x, before)
        within("swinir piecewise with biases vs straightforward", _max_abs(fast, slow), FAST_ABS)


def test_piecewise_block_keeps_its_input_unless_allowed():
    net = small_net()
    randomise_biases_and_norms(net, seed=12)
    block = net.layers[0].residual_group.blocks[1]
    x = torch.randn(2, 24 * 32, 24, generator=torch.Generator().manual_seed(5))
    before = x.clone()
    with torch.no_grad():
        kept = block(x, (24, 32))
        assert torch.equal(x, before) and kept.data_ptr() != x.data_ptr()
        written = block(x, (24, 32), overwrite_input=True)
    assert written.data_ptr() == x.data_ptr()
    assert torch.equal(written, kept)


@pytest.mark.skipif(cpu_bf16_problem() is not None, reason="no bf16 in these torch CPU kernels")
def test_piecewise_inference_under_bf16_autocast():
    """Autocast makes lower-precision products: the piecewise path then calls the modules, whose outputs
    are added to the float32 residuals (the in-place GEMM accumulation needs one dtype)."""
    net = small_net()
    randomise_biases_and_norms(net, seed=13)
    x = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert (low.float() - reference).abs().max().item() <= 0.05 * reference.abs().max().item()


def test_window_rectangles_tile_the_grid():
    grids = [(32, 32, 16), (31, 31, 16), (6, 9, 5), (1, 1, 16), (5, 3, 16), (4, 7, 1), (0, 5, 4)]
    for rows, cols, per in grids:
        seen = torch.zeros(rows, cols, dtype=torch.int64)
        for r0, r1, c0, c1 in swinir_mod._window_rectangles(rows, cols, per):
            assert 0 < (r1 - r0) * (c1 - c0) <= per
            seen[r0:r1, c0:c1] += 1
        assert bool((seen == 1).all()), (rows, cols, per)


@pytest.mark.golden
def test_global_hooks_see_whole_layer_outputs_in_observed_execution():
    """A global forward hook (as profilers and MAC-like tools use) sees whole layer outputs inside
    observed_execution(), the explicit switch off the piecewise path (torch's process-wide hook
    registries are not consulted); outside it, the same forward runs its blocks in pieces."""
    from ramir.archs.common import observed_execution

    net = small_net()
    shapes: dict[str, list[tuple]] = {}
    names = {m: n for n, m in net.named_modules()}

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            shapes.setdefault(names.get(module, "?"), []).append(tuple(output.shape))

    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(8))
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad(), observed_execution():
            whole = net(x)
        observed = dict(shapes)
        shapes.clear()
        with torch.no_grad():
            pieces = net(x)
    finally:
        handle.remove()
    assert observed["layers.0.residual_group.blocks.1.attn.qkv"] == [(24, 64, 72)]  # 4x6 windows, 3*24 ch
    assert observed["layers.0.residual_group.blocks.1.norm1"] == [(1, 32 * 48, 24)]
    assert observed["layers.0.residual_group.blocks.1.mlp.fc1"] == [(1, 32 * 48, 48)]
    assert shapes.get("layers.0.residual_group.blocks.1.mlp.fc1") != [(1, 32 * 48, 48)]  # not whole
    within("swinir global hooks: whole vs pieces", _max_abs(whole, pieces), FAST_ABS)


def test_one_image_map_reaches_the_convolutions_channels_last():
    """For B = 1 the literal transpose().view() has batch stride C, which PyTorch does not take for
    channels_last: it then copies the map to NCHW before each conv. The fast path's view keeps the layout."""
    tokens = torch.randn(1, 16 * 24, 24)
    image = swinir_mod.tokens_to_image(tokens, (16, 24))
    assert image.shape == (1, 24, 16, 24) and image.data_ptr() == tokens.data_ptr()
    assert image.is_contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(24, 24, 3, 1, 1)
    with torch.no_grad():
        out = conv(image)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert swinir_mod.image_to_tokens(out).is_contiguous()  # back to tokens without a copy
    with straightforward_path():  # the reference's literal layout, kept on the slow path
        literal = swinir_mod.tokens_to_image(tokens, (16, 24))
    assert torch.equal(literal, image)
    with torch.no_grad():  # (is_contiguous ignores a size-1 dim's stride; the conv's layout choice does not)
        assert not conv(literal).is_contiguous(memory_format=torch.channels_last)
    net = small_net()
    with torch.no_grad():
        y = net(torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(3)))
    assert y.is_contiguous()  # NCHW out, as the reference returns it


@pytest.mark.golden
def test_rstb_sums_into_the_conv_output_only_when_unobserved():
    """Inference adds the RSTB's input into the conv's fresh output in place; the input stays intact, and a
    hook on the conv sees the conv's own output (the sum then goes to a new tensor)."""
    net = small_net()
    randomise_biases_and_norms(net, seed=4)
    rstb = net.layers[0]
    x = torch.randn(1, 16 * 24, 24, generator=torch.Generator().manual_seed(6))
    before = x.clone()
    with torch.no_grad():
        plain = rstb(x, (16, 24))
        assert torch.equal(x, before)
        seen: list[torch.Tensor] = []
        handle = rstb.conv.register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            hooked = rstb(x, (16, 24))
        finally:
            handle.remove()
        with straightforward_path():
            slow = rstb(x, (16, 24))
    assert torch.equal(x, before)
    within("swinir RSTB hooked vs in place", _max_abs(hooked, plain), FAST_ABS)
    within("swinir RSTB straightforward vs in place", _max_abs(slow, plain), FAST_ABS)
    conv_out = swinir_mod.image_to_tokens(seen[0])
    # the hooked output was not summed into
    within("swinir RSTB conv output + input vs hooked", _max_abs(conv_out + x, hooked), FAST_ABS)
