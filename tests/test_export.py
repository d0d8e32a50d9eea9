"""ONNX export: the graph on [0, 1] images equals PyTorch, fixed and dynamic sizes."""

from __future__ import annotations

import pytest
import torch

import ramir
from ramir.errors import RamirError
from ramir.export import export_onnx, verify_onnx

pytest.importorskip("onnxruntime")


def _randomised(name: str, **kw) -> torch.nn.Module:
    """Random weights everywhere (NAFNet's zero-initialised residual scales would hide its blocks)."""
    torch.manual_seed(0)
    net = ramir.create_model(name, **kw).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net


def test_fixed_tile_export_matches_pytorch(tmp_path):
    net = _randomised("nafnet-s")
    report = export_onnx(net, tmp_path / "n.onnx", tile=64)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    with pytest.raises(RamirError, match="exists"):
        export_onnx(net, tmp_path / "n.onnx", tile=64)


def test_dynamic_export_handles_other_sizes(tmp_path):
    net = _randomised("nafnet-s")
    report = export_onnx(net, tmp_path / "d.onnx", tile=32, dynamic=True)
    assert report.dynamic and len(report.checked_sizes) == 2
    assert verify_onnx(tmp_path / "d.onnx", net, [(48, 80), (24, 16)]) < 1e-4


def test_swinir_fixed_tile(tmp_path):
    net = _randomised("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
    report = export_onnx(net, tmp_path / "s.onnx", tile=32)
    assert report.max_abs_diff < 1e-4


def test_tile_must_match_the_window(tmp_path):
    net = _randomised("nafnet-s")
    with pytest.raises(RamirError, match="multiple"):
        export_onnx(net, tmp_path / "x.onnx", tile=30)
