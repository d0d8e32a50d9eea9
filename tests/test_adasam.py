"""AdaSAM (RAM++'s mask generator) against the reference fixtures, and its size and count rules.

Goldens in ``fixtures/rampp/`` (official ``AdaptiveMaskPixGenerator`` in eval mode, fixtures README
"RAM++"): ``adasam_default`` is RAM++'s configuration (128 / 8 / 768, learned positions) on ``x_128``,
``adasam_small`` a 32 / 4 / 64 one with the fixed sinusoid positions (a buffer) on ``x_32``. Each
comparison is held to 4x its largest error under torch's default, AVX2 and AVX-512 kernels on 1 and 2
threads (float64 ones 100x; docs/robustness.md); the losses use ``pred_128`` / ``gt_128`` (cropped to 32
for the small config) with the golden mask and probability map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import ramir
from conftest import apply_weight_rule, load_json, load_tensors, within
from ramir.adasam import (
    AdaSAM,
    AdaSAMInputError,
    MaskSample,
    adaptive_mask_prob_l1_loss,
    create_mask_generator,
    masked_counts,
    sinusoid_table,
)
from ramir.errors import ConfigError, RamirError
from ramir.masking import masked_l1_loss

TAGS = ("small", "default")
# logits, probabilities and d L_prob / d logits, of the golden's max |.|: measured 4.05e-7 (small) and
# 6.73e-6 (default; both the gradient, default / AVX2 kernels; 0 under AVX-512, as the reference ran)
REL = {"small": 1.7e-6, "default": 2.7e-5}
FP64_REL = 3.9e-13  # float64 logits vs the float64 golden; measured 3.88e-15 (default kernels); 100x
LOSS_REL = 3e-7  # the losses, relative; measured 7.37e-8


def _rampp(name: str) -> str:
    return f"rampp/{name}"


def _rel_max_diff(a: torch.Tensor, golden: torch.Tensor) -> float:
    assert a.shape == golden.shape
    return ((a.double() - golden.double()).abs().max() / golden.double().abs().max()).item()


@dataclass
class Case:
    tag: str
    manifest: dict
    ref: dict
    gold: dict[str, torch.Tensor]
    model: AdaSAM
    x: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor


@pytest.fixture(scope="module", params=TAGS)
def case(request) -> Case:
    tag = request.param
    manifest = load_json(_rampp(f"manifest_adasam_{tag}.json"))
    model = ramir.create_mask_generator("adasam", **manifest["constructor_kwargs_passed"]).eval()
    apply_weight_rule(model)
    inputs = load_tensors(_rampp("inputs_rampp.safetensors"))
    size = manifest["constructor_kwargs_passed"]["img_size"]
    x = inputs["x_128"] if tag == "default" else inputs["x_32"]
    crop = (..., slice(0, size), slice(0, size))
    ref, gold = load_json(_rampp(f"adasam_{tag}.json")), load_tensors(_rampp(f"adasam_{tag}.safetensors"))
    return Case(tag, manifest, ref, gold, model, x, inputs["pred_128"][crop], inputs["gt_128"][crop])


# ------------------------------------------------------------------------------------------------
# Layout


def test_state_dict_matches_manifest(case: Case):
    sd = case.model.state_dict()
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]
    assert ours == [(e["key"], e["shape"], e["dtype"]) for e in case.manifest["state_dict"]]
    assert [n for n, _ in case.model.named_parameters()] == case.manifest["named_parameters_order"]
    assert sum(p.numel() for p in case.model.parameters()) == case.manifest["num_parameters"]
    assert len(list(case.model.buffers())) == case.manifest["num_buffers"]
    kinds = {e["key"]: e["kind"] for e in case.manifest["state_dict"]}
    params = dict(case.model.named_parameters())
    assert all((kinds[k] == "parameter") == (k in params) for k in sd)
    assert case.model.num_patches == case.manifest["num_patches"]
    assert [case.model.grid] * 2 == case.manifest["grid_size"]
    assert case.model.visible_patches == case.manifest["visible_patches"]


def test_weight_rule_checksums(case: Case):
    per_param = case.ref["weight_rule_per_param"]
    params = dict(case.model.named_parameters())
    assert set(per_param) == set(params)
    for name, expected in per_param.items():
        t = params[name].detach()
        assert math.isclose(t.double().sum().item(), expected["sum_fp64"], rel_tol=1e-9, abs_tol=1e-9), name
        assert t.reshape(-1)[:3].double().tolist() == expected["first3"], name


def test_sinusoid_buffer_matches_reference():
    gold = load_tensors(_rampp("adasam_small.safetensors"))["pos_embed_probs_buffer"]
    assert torch.equal(sinusoid_table(64, 64), gold)


def test_default_configuration_is_rampp():
    with torch.device("meta"):
        model = create_mask_generator()
    assert sum(p.numel() for p in model.parameters()) == 7_431_937
    assert len(list(model.parameters())) == 17 and not list(model.buffers())
    sizes = (model.img_size, model.patch_size, model.num_patches, model.num_masked_pixels)
    assert sizes == (128, 8, 256, 8192)


# ------------------------------------------------------------------------------------------------
# Probabilities, losses and the generator's gradient


@pytest.mark.golden
def test_logits_and_probabilities_match_reference(case: Case):
    with torch.no_grad():
        logits = case.model.logits(case.x)
        p = case.model.patch_probabilities(case.x)
        p_full = case.model.pixel_probabilities(p)
    for got, key in ((logits, "logits"), (logits, "logits_fp64"), (p, "p_x"), (p, "p_x_fp64"),
                     (p_full, "p_x_full")):
        within(f"adasam-{case.tag} {key} (of max|.|)", _rel_max_diff(got, case.gold[key]), REL[case.tag])
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-6)
    assert math.isclose(p_full.sum().item(), case.model.patch_size**2, rel_tol=1e-6)  # undivided per pixel


@pytest.mark.golden
def test_float64_logits_match_reference(case: Case):
    model = create_mask_generator("adasam", **case.manifest["constructor_kwargs_passed"]).eval()
    model.load_state_dict(case.model.state_dict())
    model.double()
    with torch.no_grad():
        logits = model.logits(case.x.double())
    assert logits.dtype == torch.float64
    within(f"adasam-{case.tag} fp64 logits vs golden (of max|.|)",
           _rel_max_diff(logits, case.gold["logits_fp64"]), FP64_REL)


@pytest.mark.golden
def test_losses_match_reference(case: Case):
    mask, p_full = case.gold["mask_seed0"], case.gold["p_x_full"]
    l1 = masked_l1_loss(case.pred, case.target, mask)  # AdaptiveMaskL1 is RAM's masked L1
    prob = adaptive_mask_prob_l1_loss(case.pred, case.target, mask, p_full)
    for got, key in ((l1.item(), "loss_AdaptiveMaskL1_fp64"), (prob.item(), "loss_AdaptiveMaskProbL1_fp64"),
                     (1e-4 * prob.item(), "loss_AdaptiveMaskProbL1_weight1e-4_fp32")):
        within(f"adasam-{case.tag} {key} (relative)", abs(got - case.ref[key]) / abs(case.ref[key]), LOSS_REL)


@pytest.mark.golden
def test_probability_loss_gradient_wrt_logits(case: Case):
    """d L_prob / d logits through the softmax and the pixel expansion, with the model's own methods."""
    logits = case.model.logits(case.x).detach().requires_grad_(True)
    p_full = case.model.pixel_probabilities(case.model.probabilities_from_logits(logits))
    pred = case.pred.clone().requires_grad_(True)
    adaptive_mask_prob_l1_loss(pred, case.target, case.gold["mask_seed0"], p_full).backward()
    within(f"adasam-{case.tag} d L_prob / d logits (of max|.|)",
           _rel_max_diff(logits.grad, case.gold["grad_probloss_wrt_logits"]), REL[case.tag])
    assert pred.grad is None  # the reconstruction error is detached: only the generator learns from it


def test_probability_loss_trains_the_generator_only_through_its_score_head(case: Case):
    model = case.model
    model.zero_grad()
    sample = model(case.x)
    adaptive_mask_prob_l1_loss(case.pred, case.target, sample.mask, sample.probabilities).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["mask_token"] is None  # unused in forward, as in the reference
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items() if n != "mask_token")
    model.zero_grad()


# ------------------------------------------------------------------------------------------------
# The mask: count, draw, sizes


def test_masked_pixel_count(case: Case):
    torch.manual_seed(1)
    with torch.no_grad():
        sample = case.model(case.x.expand(2, -1, -1, -1))
    assert isinstance(sample, MaskSample)
    size = case.model.img_size
    assert sample.mask.shape == sample.probabilities.shape == (2, 1, size, size)
    counts = sample.mask.flatten(1).sum(1).tolist()
    assert counts == [case.ref["num_masked_pixels"]] * 2 == [size * size // 2] * 2
    assert set(sample.mask.unique().tolist()) <= {0.0, 1.0}


def test_draw_reproduces_reference_mask_on_cpu(case: Case):
    """After ``torch.manual_seed(0)`` the draw is the reference's (torch's CPU multinomial without
    replacement on the same weights; on another device or RNG the indices differ, the count does not)."""
    torch.manual_seed(0)
    assert torch.equal(case.model.sample_mask(case.gold["p_x_full"]), case.gold["mask_seed0"])
    torch.manual_seed(0)
    with torch.no_grad():
        sample = case.model(case.x)
    assert torch.equal(sample.mask, case.gold["mask_seed0"])
    g = torch.Generator().manual_seed(0)  # an explicit generator gives the same draw
    assert torch.equal(case.model.sample_mask(case.gold["p_x_full"], generator=g), case.gold["mask_seed0"])


@pytest.mark.parametrize("shape", [(1, 3, 127, 128), (1, 3, 64, 64), (1, 3, 256, 256), (1, 1, 128, 128),
                                   (3, 128, 128)])
def test_other_sizes_are_a_clear_error(shape):
    with torch.device("meta"):
        model = create_mask_generator("adasam")
        with pytest.raises(AdaSAMInputError, match=r"exactly \(B, 3, 128, 128\).*crop to 128x128"):
            model(torch.zeros(shape))
    assert issubclass(AdaSAMInputError, ValueError) and issubclass(AdaSAMInputError, RamirError)


@pytest.mark.parametrize("args, expected", [((128, 8, 0.5), (128, 8192)), ((224, 16, 0.75), (49, 37632)),
                                            ((32, 4, 0.5), (32, 512)), ((128, 8, 0.3), (179, 4928))])
def test_masked_counts_follow_the_reference_arithmetic(args, expected):
    assert masked_counts(*args) == expected


@pytest.mark.parametrize("ratio, masked", [(0.0, 0), (1.0, 64), (0.25, 16)])
def test_extreme_ratios(ratio: float, masked: int):
    model = AdaSAM(img_size=8, patch_size=2, embed_dim=16, mask_ratio=ratio).eval()
    with torch.no_grad():
        sample = model(torch.randn(2, 3, 8, 8))
    assert sample.mask.flatten(1).sum(1).tolist() == [masked] * 2


def test_dropout_is_active_in_train_mode_only(case: Case):
    model = case.model
    try:
        model.train()
        with torch.no_grad():
            a, b = model.logits(case.x), model.logits(case.x)
        assert not torch.equal(a, b)
    finally:
        model.eval()
    with torch.no_grad():
        assert torch.equal(model.logits(case.x), model.logits(case.x))


@pytest.mark.parametrize("kwargs", [dict(img_size=100, patch_size=8), dict(embed_dim=100),
                                    dict(mask_ratio=1.5)])
def test_bad_configs_fail_at_construction(kwargs):
    with pytest.raises(ValueError, match="AdaSAM") as info:
        AdaSAM(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_unknown_generator_is_named():
    with pytest.raises(KeyError, match=r"unknown mask generator 'random'.*adasam"):
        ramir.create_mask_generator("random")
