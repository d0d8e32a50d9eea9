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
    # the exporter's weights side file is folded into the graph and removed: one file, nothing hidden
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]


def test_swinir_fixed_tile(tmp_path):
    net = _randomised("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2])
    report = export_onnx(net, tmp_path / "s.onnx", tile=32)
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize(
    "name, kw",
    [("ram-swinir-small", dict(embed_dim=12, depths=[2], num_heads=[2])), ("promptir-small", {})],
)
def test_dynamic_export_of_transformers(tmp_path, name, kw):
    """SwinIR's windowed attention and PromptIR's prompts at sizes other than the traced one (the
    dynamic exporter once failed on SwinIR's fused-attention strides)."""
    # PromptIR keeps its own initialisation: with every weight ~N(0, 0.1) its deep attention stack
    # amplifies float rounding to ~2e-3 in the static export as well, which would test nothing here
    torch.manual_seed(0)
    net = _randomised(name, **kw) if "swin" in name else ramir.create_model(name).eval()
    # traced at the size the network was built for (SwinIR's img_size 64), where the stored shift mask
    # of its second (shifted) block once pinned the graph to that size
    report = export_onnx(net, tmp_path / "t.onnx", tile=64, dynamic=True)
    assert report.max_abs_diff < 1e-4
    # sizes the graph takes are multiples of the network's size multiple (8 and 16 here; ramir's ONNX
    # runner pads to it, as the exported graph's metadata says)
    assert verify_onnx(tmp_path / "t.onnx", net, [(48, 80), (96, 32)]) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]


def test_a_graph_that_fails_its_check_is_not_left_behind(tmp_path, monkeypatch):
    net = _randomised("nafnet-s")
    monkeypatch.setattr("ramir.export.verify_onnx", lambda *a, **k: 1.0)
    with pytest.raises(RamirError, match="not trusted"):
        export_onnx(net, tmp_path / "bad.onnx", tile=32)
    assert list(tmp_path.iterdir()) == []


def test_tile_must_match_the_window(tmp_path):
    net = _randomised("nafnet-s")
    with pytest.raises(RamirError, match="multiple"):
        export_onnx(net, tmp_path / "x.onnx", tile=30)


def test_onnxruntime_backend_restores_like_pytorch(tmp_path, monkeypatch):
    """`--backend onnxruntime`: same output as PyTorch on sizes off the network's multiple, whole and
    tiled; the exported graph is cached and reused."""
    monkeypatch.setenv("RAMIR_CACHE", str(tmp_path / "cache"))
    net = _randomised("nafnet-s")
    image = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    for tile in (0, 32):
        ref = ramir.load(net, device="cpu", tile=tile).restore_tensor(image)
        ort = ramir.load(net, device="cpu", tile=tile, backend="onnxruntime")
        assert ort._forward.path.parent == tmp_path / "cache" / "onnx"
        assert (ort.restore_tensor(image) - ref).abs().max() < 1e-4
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1  # the second load found the first one's graph
    assert sorted((tmp_path / "cache" / "onnx").iterdir()) == cached  # and no temporary litter


def test_onnxruntime_backend_refuses_what_it_cannot_do():
    net = _randomised("nafnet-s")
    with pytest.raises(RamirError, match="fp32"):
        ramir.load(net, device="cpu", precision="bf16", backend="onnxruntime")
    with pytest.raises(RamirError, match="backend must be"):
        ramir.load(net, device="cpu", backend="tensorrt")


def test_cli_library_errors_are_one_line_naming_the_step(tmp_path, capsys, monkeypatch):
    """An error from the exporter's internals (pages long, e.g. torch.export's) is one line naming the
    step that failed; the trace only with --debug. Nothing is written."""
    from ramir.checkpoints import save_checkpoint
    from ramir.cli import main

    save_checkpoint(tmp_path / "n.safetensors", ramir.create_model("nafnet-s", width=8))

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to decompose the FX graph\n" + "graph dump line\n" * 200)

    monkeypatch.setattr("ramir.cli.export.export_onnx", broken)
    argv = ["export", str(tmp_path / "n.safetensors"), "-o", str(tmp_path / "n.onnx"), "--tile", "64"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "ramir: error: exporting to ONNX (64x64): RuntimeError: Failed to decompose the FX graph "
        "(run with --debug for details)"
    ]
    with pytest.raises(RuntimeError, match="decompose"):
        main(["--debug", *argv])
    assert not (tmp_path / "n.onnx").exists()
    # reading the checkpoint is a step of its own
    monkeypatch.setattr("ramir.checkpoints.load_network", lambda *a, **k: 1 / 0)
    assert main(argv) == 1
    assert "ramir: error: loading " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ CLI
def _checkpoint_with_ema(path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A small NAFNet checkpoint whose raw and EMA weights differ (the EMA is what restores)."""
    from ramir.checkpoints import save_checkpoint

    raw, ema = _randomised("nafnet-s", width=8), _randomised("nafnet-s", width=8)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    save_checkpoint(path, raw, ema_state_dict=ema.state_dict(), stage="pretrain")
    return raw, ema


def _onnx_restores_like(path, net: torch.nn.Module, h: int, w: int) -> float:
    """Largest |onnxruntime - PyTorch| on one [0, 1] image; also checks the file is a valid ONNX model
    whose graph takes and returns (N, 3, H, W) images."""
    import onnx
    import onnxruntime as ort

    from ramir.imagespace import ImageSpaceModel

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert len(inp.shape) == len(out.shape) == 4 and inp.shape[1] == out.shape[1] == 3
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    (y,) = session.run(None, {inp.name: x.numpy()})
    with torch.inference_mode():
        ref = ImageSpaceModel(net).eval()(x).numpy()
    assert y.shape == ref.shape
    return float(abs(y - ref).max())


def test_cli_exports_the_ema_weights(tmp_path, capsys):
    from ramir.cli import main

    ckpt = tmp_path / "n.safetensors"
    raw, ema = _checkpoint_with_ema(ckpt)
    onnx_path = tmp_path / "n.onnx"
    assert main(["export", str(ckpt), "-o", str(onnx_path), "--tile", "32"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"wrote {onnx_path} (32x32); max |onnx - torch| = ") and "\n" not in out
    assert _onnx_restores_like(onnx_path, ema, 32, 32) < 1e-4  # the EMA weights by default
    assert _onnx_restores_like(onnx_path, raw, 32, 32) > 1e-2  # (which differ from the raw ones)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.onnx", "n.safetensors"]
    # an existing output is refused without --overwrite (and left as it was), replaced with it
    before = onnx_path.read_bytes()
    assert main(["export", str(ckpt), "-o", str(onnx_path), "--tile", "32", "--raw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ramir: error: ") and "exists" in err[0]
    assert onnx_path.read_bytes() == before
    assert main(["export", str(ckpt), "-o", str(onnx_path), "--tile", "32", "--raw", "--overwrite"]) == 0
    assert _onnx_restores_like(onnx_path, raw, 32, 32) < 1e-4  # --raw: the raw weights
    # (--dynamic: the exporter itself is tested above; through the CLI it would add ~15 s of torch.export)


def test_cli_export_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    from ramir.cli import main

    ckpt = tmp_path / "n.safetensors"
    _checkpoint_with_ema(ckpt)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not a checkpoint")
    cases = {
        "missing checkpoint": ([str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        "not a checkpoint": ([str(tmp_path / "junk.safetensors")], "junk.safetensors"),
        "tile off the size multiple": ([str(ckpt), "--tile", "30"], "multiple"),
        "--expert on a single network": ([str(ckpt), "--expert", "noise"], "not a routed network"),
    }
    for what, (args, needle) in cases.items():
        code = main(["export", *args, "-o", str(tmp_path / "x.onnx")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, what
        assert len(err) == 1 and err[0].startswith("ramir: error: ") and needle in err[0], (what, err)
        assert "Traceback" not in err[0]
    assert not (tmp_path / "x.onnx").exists()
    # argparse errors (a missing -o, a tile that is not a number): usage and exit status 2
    for argv in (["export", str(ckpt)], ["export", str(ckpt), "-o", "x.onnx", "--tile", "big"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "ramir export: error:" in capsys.readouterr().err
