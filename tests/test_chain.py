"""The routed model's chain, forced choices and what it reports (ramir.routing, Restorer, CLI, export).

A tiny routed network whose router reads the image's brightness and whose experts change it by known
amounts, so every decision is predictable from the input and a wrong decision changes the output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ramir.archs import build_network
from ramir.errors import RamirError
from ramir.imagespace import denormalize, normalize
from ramir.inference import load
from ramir.routing import Decision, Step, parse_experts, run_chain, run_forced

CLASSES = ["clean", "bright", "dark"]


class BrightnessRouter(nn.Module):
    """Logits from the mean brightness: > 0.7 bright, < 0.3 dark, else clean (a sharp softmax)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = denormalize(x).mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), (m - 0.7) * 50, (0.3 - m) * 50], dim=1)


class Scale(nn.Module):
    """An expert that multiplies the [0, 1] image by ``factor``."""

    size_multiple = 1

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize((denormalize(x) * self.factor).clamp(0, 1))


def tiny_routed(dim: float = 0.5, lift: float = 2.0, max_steps: int = 2, **settings) -> nn.Module:
    net = build_network(
        "routed", expert_arch="nafnet", expert_kwargs={"width": 8, "enc_blocks": [1], "middle_blocks": 1,
                                                         "dec_blocks": [1]},
        classes=CLASSES, class_to_expert=[-1, 0, 1], experts=["dim", "lift"], max_steps=max_steps, **settings,
    )
    net.router = BrightnessRouter()
    net.experts = nn.ModuleList([Scale(dim), Scale(lift)])
    net.size_multiple = 1
    return net


def flat(value: float, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(value + rng.uniform(-0.02, 0.02, (h, w, 3)), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------- pure policy
def _policy(labels: list[str]):
    """A router that answers ``labels`` in turn (p 0.9 each) and experts that append their name."""
    answers = iter(labels)

    def route(x):
        label = next(answers)
        return {label: 0.9, "clean": 0.1}, label

    return route, (lambda c: None if c == "clean" else c), (lambda e, x: [*x, e])


def test_chain_stops_when_clean_on_repeat_and_at_max_steps():
    route, expert_of, apply = _policy(["noise", "haze", "clean"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=5)
    assert y == ["noise", "haze"] and d.stop == "clean" and d.experts == ("noise", "haze")
    route, expert_of, apply = _policy(["noise", "noise"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=5)
    assert y == ["noise"] and d.stop == "repeat"
    route, expert_of, apply = _policy(["noise", "haze", "rain"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=2)
    assert y == ["noise", "haze"] and d.stop == "max-steps"


def test_chain_threshold_refuses_an_unsure_later_step_only():
    route, expert_of, apply = _policy(["noise", "haze"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=3, threshold=0.95)
    assert y == ["noise"] and d.stop == "unsure"  # the first step is taken at p 0.9 < 0.95 all the same


def test_chain_after_refuses_a_later_step_after_an_expert_not_listed():
    after = {"tone": ["noise"]}
    route, expert_of, apply = _policy(["rain", "tone"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=3, after=after)
    assert y == ["rain"] and d.stop == "order"
    route, expert_of, apply = _policy(["noise", "tone", "clean"])
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=3, after=after)
    assert y == ["noise", "tone"] and d.stop == "clean"
    route, expert_of, apply = _policy(["tone", "rain", "clean"])  # the rule binds tone, not what follows it
    y, d = run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=3, after=after)
    assert y == ["tone", "rain"]
    route, expert_of, apply = _policy(["rain", "tone", "clean"])  # without the rule: both
    assert run_chain([], route=route, expert_of=expert_of, apply=apply, max_steps=3)[0] == ["rain", "tone"]


def test_parse_experts():
    names = ["noise", "jpeg"]
    assert parse_experts(None, names) is None
    assert parse_experts("none", names) == []
    assert parse_experts("jpeg, noise", names) == ["jpeg", "noise"]
    assert parse_experts(["noise"], names) == ["noise"]
    with pytest.raises(RamirError, match="unknown expert 'blur': choose from noise, jpeg"):
        parse_experts("jpeg,blur", names)
    with pytest.raises(RamirError):
        parse_experts("none,jpeg", names)


def test_descriptions():
    assert Decision((Step("noise", "noise", 0.934), Step("tone", "haze", 0.71)), {}).describe() == (
        "noise (p 0.93) -> tone (p 0.71)")
    assert Decision((), {"clean": 0.88}).describe() == "left unchanged: looks clean (p = 0.88)"
    assert run_forced(1, ["jpeg"], lambda e, x: x)[1].describe() == "jpeg (as asked)"
    assert run_forced(1, [], lambda e, x: x)[1].describe().startswith("left unchanged (as asked")


# ----------------------------------------------------------------------------------------- Restorer
def test_restorer_chains_experts_by_what_the_router_sees():
    r = load(tiny_routed(dim=0.2, max_steps=2), device="cpu", tile=0)
    img = flat(0.9)
    out = r.restore(img)
    # bright -> dim x0.2 (0.18, now dark) -> lift x2 (0.36): two steps, each chosen on the image it got
    assert [s.expert for s in r.last_decisions[0].steps] == ["dim", "lift"]
    np.testing.assert_allclose(out, np.clip(img * 0.2, 0, 1) * 2.0, atol=2e-6)
    r.max_steps = 1
    out1 = r.restore(img)
    assert r.last_decisions[0].experts == ("dim",) and r.last_decisions[0].stop == "max-steps"
    np.testing.assert_allclose(out1, img * 0.2, atol=2e-6)


def test_restorer_follows_the_checkpoints_chain_after_and_it_survives_saving(tmp_path):
    from ramir.checkpoints import load_network, save_checkpoint

    img = flat(0.9)  # bright -> dim (now dark) -> lift, unless lift may not follow dim
    r = load(tiny_routed(dim=0.2, chain_after={"lift": []}), device="cpu", tile=0)
    np.testing.assert_allclose(r.restore(img), img * 0.2, atol=2e-6)
    assert r.last_decisions[0].experts == ("dim",) and r.last_decisions[0].stop == "order"
    r = load(tiny_routed(dim=0.2, chain_after={"lift": ["dim"]}), device="cpu", tile=0)
    r.restore(img)
    assert r.last_decisions[0].experts == ("dim", "lift")
    built = build_network(
        "routed", expert_arch="nafnet", expert_kwargs={"width": 8, "enc_blocks": [1], "middle_blocks": 1,
                                                         "dec_blocks": [1]},
        classes=CLASSES, class_to_expert=[-1, 0, 1], experts=["dim", "lift"], chain_after={"lift": ["dim"]},
    )
    save_checkpoint(tmp_path / "r.safetensors", built)
    assert load_network(tmp_path / "r.safetensors").chain_after == {"lift": ["dim"]}
    for bad, match in (({"sharpen": ["dim"]}, "chain_after names 'sharpen'"),
                       ({"lift": ["sharpen"]}, "names 'sharpen'"), ({"lift": "dim"}, "must be a list")):
        with pytest.raises(ValueError, match=match):
            tiny_routed(chain_after=bad)


def test_restorer_routes_each_image_of_a_batch_on_its_own():
    r = load(tiny_routed(max_steps=1), device="cpu", tile=0)
    x = torch.from_numpy(np.stack([flat(0.9), flat(0.1), flat(0.5)])).permute(0, 3, 1, 2)
    y = r.restore_tensor(x)
    assert [d.experts for d in r.last_decisions] == [("dim",), ("lift",), ()]
    assert r.last_routes == ["bright", "dark", "clean"]
    np.testing.assert_allclose(y[0].numpy(), x[0].numpy() * 0.5, atol=2e-6)
    np.testing.assert_allclose(y[1].numpy(), x[1].numpy() * 2.0, atol=2e-6)
    assert torch.equal(y[2], x[2])
    assert r.last_decisions[2].describe().startswith("left unchanged: looks clean (p = 1.00)")


def test_forced_experts_and_route():
    r = load(tiny_routed(), device="cpu", tile=0)
    img = flat(0.9)
    decision = r.route(img)
    assert decision.experts == ("dim",) and abs(sum(decision.probabilities.values()) - 1) < 1e-6
    assert decision.probabilities["bright"] > 0.99
    np.testing.assert_allclose(r.restore(img, expert="lift"), np.clip(img * 2, 0, 1), atol=2e-6)
    assert r.last_decisions[0].forced and r.last_routes == ["forced"]
    np.testing.assert_allclose(r.restore(img, expert="lift,dim"), np.clip(img * 2, 0, 1) * 0.5, atol=2e-6)
    assert np.array_equal(r.restore(img, expert="none"), img)
    with pytest.raises(RamirError, match="choose from dim, lift"):
        r.restore(img, expert="sharpen")


def test_expert_on_a_plain_network_is_one_clear_error():
    r = load(Scale(1.0), device="cpu", tile=0)
    with pytest.raises(RamirError, match="routed model"):
        r.restore(flat(0.5), expert="noise")


# ------------------------------------------------------------------------------ CLI and the real model
def _noisy_png(path, sigma: float = 30.0, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w] / 128
    clean = np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)], -1)
    noisy = np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1)
    Image.fromarray((noisy * 255 + 0.5).astype(np.uint8)).save(path)
    return path


@pytest.mark.skipif(__import__("ramir.inference").inference.default_weights() is None,
                    reason="no embedded default model")
def test_restore_verbose_names_the_noise_restoration_and_expert_forces_another(tmp_path, capsys):
    from PIL import Image

    from ramir.cli import main

    src = _noisy_png(tmp_path / "noisy.png")
    assert main(["restore", str(src), "-o", str(tmp_path / "auto"), "-v", "--backend", "torch"]) == 0
    assert f"{src}: noise (p " in capsys.readouterr().err
    assert main(["restore", str(src), "-o", str(tmp_path / "jpeg"), "-v", "--backend", "torch",
                 "--expert", "jpeg"]) == 0
    captured = capsys.readouterr()
    assert f"{src}: jpeg (as asked)" in captured.err and "restorations: jpeg 1" in captured.out
    a = np.asarray(Image.open(tmp_path / "auto" / "noisy.png"), dtype=np.float32)
    b = np.asarray(Image.open(tmp_path / "jpeg" / "noisy.png"), dtype=np.float32)
    assert np.abs(a - b).mean() > 0.5  # another expert, another output
    assert main(["restore", str(src), "-o", str(tmp_path / "bad"), "--expert", "sharpen"]) == 2
    assert "unknown expert 'sharpen': choose from noise, deblur" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


@pytest.mark.skipif(__import__("ramir.inference").inference.default_weights() is None,
                    reason="no embedded default model")
def test_info_lists_the_routing_of_the_default_model(capsys):
    from ramir.cli import main
    from ramir.inference import default_weights

    assert main(["info", str(default_weights())]) == 0
    out = capsys.readouterr().out
    for needle in ("classes:", "noise -> noise", "clean -> left unchanged", "keep threshold:", "chain:"):
        assert needle in out, needle


def test_export_whole_routed_model_runs_with_onnxruntime_alone(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from ramir.checkpoints import save_checkpoint
    from ramir.cli import main
    from ramir.export import routed_paths, run_exported

    torch.manual_seed(0)
    net = build_network(
        "routed", expert_arch="nafnet", expert_kwargs={"width": 8, "enc_blocks": [1], "middle_blocks": 1,
                                                         "dec_blocks": [1]},
        classes=["clean", "noise", "blur"], class_to_expert=[-1, 0, 1], experts=["noise", "deblur"],
        max_steps=2, route_size=64, scale_check=40, scale_classes=["blur"], scale_restore=True,
        keep_threshold=0.9, doubt_experts=["noise"], doubt_floor=0.05, chain_after={"noise": ["deblur"]},
    )
    with torch.no_grad():  # a router that tells images apart: logits from the input's statistics
        net.router.head[-1].weight.mul_(20.0)
    ckpt = tmp_path / "tiny_routed.safetensors"
    save_checkpoint(ckpt, net)
    out = tmp_path / "d" / "default.onnx"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest, graphs = routed_paths(out, ["noise", "deblur"])
    assert manifest.is_file() and all(p.is_file() for p in graphs.values())
    assert "the same experts chosen on 8" in printed
    assert json.loads(manifest.read_text())["chain_after"] == {"noise": ["deblur"]}
    assert json.loads(manifest.read_text())["doubt_floor"] == 0.05
    # the exported model on an image of another size than any check image, against PyTorch
    r = load(net, device="cpu", tile=0, backend="torch")
    img = flat(0.6, 72, 90)
    y, experts = run_exported(manifest, img)
    ref = r.restore(img)
    assert experts == list(r.last_decisions[0].experts)
    assert np.abs(y - ref).max() < 1e-4
    # a photo large enough for the second look (numpy's in run_exported, PyTorch's in the Restorer)
    big = np.clip(flat(0.45, 96, 150) + np.random.default_rng(1).normal(0, 0.08, (96, 150, 3)), 0, 1)
    big = big.astype(np.float32)
    assert net.looks_twice(torch.zeros(1, 3, 96, 150))
    y, experts = run_exported(manifest, big)
    ref = r.restore(big)
    assert experts == list(r.last_decisions[0].experts)
    assert np.abs(y - ref).max() < 1e-4
    forced = r.restore(big, expert="deblur")  # the deblurring expert on it works at the 40-px scale
    small = r.restore(big, expert="noise")
    assert forced.shape == small.shape == big.shape
    assert main(["export", str(ckpt), "-o", str(out)]) == 2  # exists: refused, nothing replaced
    assert "exists" in capsys.readouterr().err
    # the plain-onnxruntime code of docs/routing.md, run as written, does what run_exported does
    from PIL import Image

    doc = (Path(__file__).resolve().parents[1] / "docs" / "routing.md").read_text()
    code = next(b for b in doc.split("```python")[1:] if "onnxruntime as ort" in b).split("```")[0]
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(tmp_path / "photo.png")
    photo = np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float32) / 255
    expected, experts = run_exported(manifest, photo)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/routing.md", "exec"), {})
    assert f"applied: {experts or 'nothing (looks clean)'}" in capsys.readouterr().out
    got = np.asarray(Image.open(tmp_path / "restored.png"), dtype=np.float32) / 255
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6


def test_fp16_stored_weights_load_as_fp32_and_restore_alike(tmp_path):
    from ramir.checkpoints import load_network, save_checkpoint

    torch.manual_seed(0)
    net = build_network("nafnet", width=8, enc_blocks=[1], middle_blocks=1, dec_blocks=[1]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    half = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_checkpoint(tmp_path / "h.safetensors", half, spec=__import__("ramir.archs").archs.network_spec(net))
    back = load_network(tmp_path / "h.safetensors").eval()
    assert all(p.dtype == torch.float32 for p in back.parameters())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = net(normalize(x)), back(normalize(x))
    assert 0 < float((a - b).abs().max()) < 5e-3  # rounded weights: close, not identical


@pytest.mark.skipif(__import__("ramir.inference").inference.default_weights() is None,
                    reason="no embedded default model")
def test_embedded_weights_are_fp16_and_small():
    from safetensors import safe_open

    from ramir.inference import default_weights

    path = default_weights()
    assert path.stat().st_size <= 10 * 2**20
    with safe_open(str(path), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}  # noqa: SIM118
