"""Checkpoints: reference/Lightning/bare/ramir formats, detection from shapes, strictness, bad files, CLI."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import apply_weight_rule, load_json, load_tensors, within
from ramir.archs import MODEL_CONFIGS, create_model
from ramir.checkpoints import (
    describe_checkpoint,
    detect_architecture,
    load_checkpoint,
    load_network,
    parameter_count,
    registered_name,
    save_checkpoint,
)
from ramir.cli import main
from ramir.errors import CheckpointError
from ramir.imagespace import ImageSpaceModel

SWINIR_SMALL_PARAMS = 50_043  # fixtures README §2
# 4x (float64: 100x) the largest error under torch's default, AVX2 and AVX-512 kernels on 1 and 2 threads
SWINIR_FP32_REL = 4.9e-6  # measured 1.21e-6 of max|y| (default kernels), as tests/test_swinir.py's
PROMPTIR_FP64_REL = 1.8e-14  # measured 1.78e-16 of max|y| at every setting


def _close_to_golden(y: torch.Tensor, golden: torch.Tensor) -> float:
    """Max |y - golden| relative to max |golden| (the brief's 1e-4 * max|y| criterion)."""
    return ((y.double() - golden).abs().max() / golden.abs().max()).item()


def _prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


@pytest.fixture(scope="module")
def swinir_small() -> torch.nn.Module:
    model = create_model("ram-swinir-small")
    apply_weight_rule(model)
    return model.eval()


@pytest.fixture(scope="module")
def promptir_small_sd() -> dict[str, torch.Tensor]:
    model = create_model("promptir-small")
    apply_weight_rule(model)
    return model.state_dict()


def _meta_state_dict(name: str, **overrides) -> dict[str, torch.Tensor]:
    """Shapes without memory: enough for detection, cheap even for PromptIR."""
    with torch.device("meta"):
        return create_model(name, **overrides).state_dict()


def _manifest_state_dict(tag: str) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's keys and shapes (zero-strided views: no memory)."""
    entries = load_json(f"manifest_{tag}.json")["state_dict"]
    return {e["key"]: torch.zeros(()).expand(e["shape"]) for e in entries}


# --------------------------------------------------------------------------------------------------
# reference checkpoints reproduce the golden outputs


@pytest.mark.golden
@pytest.mark.parametrize("layout", ["params", "params+params_ema"])
def test_reference_pth_swinir_small_reproduces_golden(tmp_path, forward_inputs, swinir_small, layout):
    good = _prefixed(swinir_small.state_dict(), "module.")
    if layout == "params":
        obj = {"params": good}
    else:  # EMA holds the golden weights, params something else: EMA must be preferred
        other = {k: v * 0.5 if v.is_floating_point() else v for k, v in good.items()}
        obj = {"params": other, "params_ema": good}
    path = tmp_path / "ram_swinir_small.pth"
    torch.save(obj, path)

    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "reference"
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
    assert registered_name(ckpt.spec) == "ram-swinir-small"

    net = load_network(path)
    assert not net.training
    assert net.ramir_spec.kwargs == MODEL_CONFIGS["ram-swinir-small"].kwargs
    golden = load_tensors("forward_swinir_small.safetensors")["y_fp64"]
    with torch.no_grad():
        y = net(forward_inputs["x"])
    within(f"swinir-small from a reference .pth ({layout}), fp32 vs fp64 golden (of max|y|)",
           _close_to_golden(y, golden), SWINIR_FP32_REL)

    if layout != "params":  # the non-EMA weights are selectable and are really the other tensors
        plain = load_network(path, prefer_ema=False)
        w = "conv_last.weight"
        assert torch.equal(plain.state_dict()[w], obj["params"]["module." + w])
        assert not torch.equal(plain.state_dict()[w], net.state_dict()[w])
        plain_sd = load_checkpoint(path, prefer_ema=False).state_dict
        assert torch.equal(plain_sd[w], obj["params"]["module." + w])


@pytest.mark.golden
def test_lightning_promptir_small_reproduces_golden_fp64(tmp_path, forward_inputs, promptir_small_sd):
    state = _prefixed(promptir_small_sd, "net.")
    # the original PromptIR's convs that it builds but never calls (shapes as in its decoder)
    unused = {
        "chnl_reduce1.weight": (64, 64, 1, 1), "chnl_reduce2.weight": (128, 128, 1, 1),
        "chnl_reduce3.weight": (256, 320, 1, 1), "reduce_noise_channel_1.weight": (48, 112, 1, 1),
        "reduce_noise_channel_2.weight": (96, 224, 1, 1), "reduce_noise_channel_3.weight": (192, 448, 1, 1),
    }
    state.update({"net." + k: torch.randn(s) for k, s in unused.items()})
    path = tmp_path / "promptir-epoch=3.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1200,
                "pytorch-lightning_version": "2.1.0"}, path)

    with pytest.warns(UserWarning, match="unused convs") as record:
        net = load_network(path)
    message = str(record[0].message)
    assert all(k in message for k in unused)
    assert registered_name(net.ramir_spec) == "promptir-small"
    with pytest.warns(UserWarning, match="unused convs"):
        assert load_checkpoint(path).source_format == "lightning"

    golden = load_tensors("forward_promptir_small.safetensors")["y_fp64"]
    net = net.double()  # fp32 cannot see PromptIR's FFN under the weight rule (fixtures README §3.6)
    with torch.no_grad():
        y = net(forward_inputs["x"].double())
    within("promptir-small from a Lightning .ckpt, fp64 vs golden (of max|y|)", _close_to_golden(y, golden),
           PROMPTIR_FP64_REL)


def test_unused_keys_are_dropped_only_for_promptir():
    sd = {"conv.weight": torch.zeros(2, 2), "chnl_reduce1.weight": torch.zeros(2, 2)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: not a PromptIR, nothing dropped silently either
        ckpt = load_checkpoint(sd)
    assert "chnl_reduce1.weight" in ckpt.state_dict and ckpt.spec is None


# --------------------------------------------------------------------------------------------------
# detection from keys and shapes


@pytest.mark.parametrize("tag, name", [
    ("swinir_small", "ram-swinir-small"), ("swinir_default", "ram-swinir"),
    ("promptir_small", "promptir-small"), ("promptir_default", "promptir"),
])
def test_detection_from_manifest_shapes(tag, name):
    sd = _manifest_state_dict(tag)
    spec = detect_architecture(sd)
    assert spec.arch == MODEL_CONFIGS[name].arch
    assert spec.kwargs == MODEL_CONFIGS[name].kwargs
    assert registered_name(spec) == name
    assert parameter_count(sd) == load_json(f"manifest_{tag}.json")["num_parameters"]


def test_detected_small_specs_rebuild_the_manifest_exactly():
    for tag in ("swinir_small", "promptir_small"):
        spec = detect_architecture(_manifest_state_dict(tag))
        with torch.device("meta") if spec.arch == "promptir" else torch.device("cpu"):
            built = create_model(spec.arch, **spec.kwargs).state_dict()
        manifest = [(e["key"], e["shape"]) for e in load_json(f"manifest_{tag}.json")["state_dict"]]
        assert [(k, list(v.shape)) for k, v in built.items()] == manifest


def test_bare_state_dicts_are_detected(swinir_small, promptir_small_sd):
    assert detect_architecture(swinir_small.state_dict()).kwargs == MODEL_CONFIGS["ram-swinir-small"].kwargs
    assert detect_architecture(promptir_small_sd).kwargs == MODEL_CONFIGS["promptir-small"].kwargs
    ckpt = load_checkpoint(_prefixed(swinir_small.state_dict(), "module."))
    assert ckpt.source_format == "bare" and registered_name(ckpt.spec) == "ram-swinir-small"


def test_non_default_swinir_is_detected_and_loads():
    kwargs = dict(img_size=32, patch_size=1, in_chans=3, embed_dim=36, depths=[2, 2, 2], num_heads=[3, 3, 3],
                  mlp_ratio=4, window_size=4, upscale=1, resi_connection="3conv")
    model = create_model("swinir", **kwargs)
    spec = detect_architecture(model.state_dict())
    assert spec.arch == "swinir" and spec.kwargs == kwargs
    loaded = load_network(model.state_dict())
    x = torch.randn(1, 3, 20, 23)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_non_default_promptir_is_detected():
    kwargs = dict(decoder=True, num_blocks=[2, 1, 1, 3], num_refinement_blocks=2, heads=[2, 2, 4, 4],
                  ffn_expansion_factor=2.0, bias=True, LayerNorm_type="BiasFree")
    spec = detect_architecture(_meta_state_dict("promptir", **kwargs))
    assert spec.arch == "promptir" and spec.kwargs == kwargs
    plain = detect_architecture(_meta_state_dict("promptir", decoder=False, num_blocks=[1, 1, 1, 1]))
    assert plain.kwargs == {"decoder": False, "num_blocks": [1, 1, 1, 1]}


def test_original_swinir_is_refused_and_unknown_networks_named():
    original = {k: v for k, v in _manifest_state_dict("swinir_small").items() if k != "mask_token"}
    original["conv_first.weight"] = torch.zeros(24, 3, 3, 3)
    original["conv_before_upsample.0.weight"] = torch.zeros(64, 24, 3, 3)
    with pytest.raises(CheckpointError, match=r"original SwinIR.*not RAM-SwinIR"):
        detect_architecture(original)
    expected = r"unknown network.*conv_first\.weight.*found encoder\.0\.weight"
    with pytest.raises(CheckpointError, match=expected):
        load_network({"encoder.0.weight": torch.zeros(3), "head.bias": torch.zeros(1)})


# --------------------------------------------------------------------------------------------------
# ramir's own format


def test_ramir_format_round_trip(tmp_path, swinir_small):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in swinir_small.state_dict().items()}
    path = tmp_path / "ckpt.safetensors"
    # wrapped in ImageSpaceModel: saved under the network's own keys, spec found through the wrapper
    save_checkpoint(path, ImageSpaceModel(swinir_small), stage="pretrain", ema_state_dict=ema,
                    metadata={"iteration": 400, "data": "lsdir"})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left behind

    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "ramir" and ckpt.stage == "pretrain"
    assert ckpt.spec.arch == "swinir" and ckpt.spec.kwargs == MODEL_CONFIGS["ram-swinir-small"].kwargs
    assert ckpt.metadata["iteration"] == 400 and ckpt.metadata["data"] == "lsdir"
    assert {"ramir_version", "torch_version", "date"} <= set(ckpt.metadata)
    for k, v in swinir_small.state_dict().items():
        assert torch.equal(ckpt.raw_state_dict[k], v) and torch.equal(ckpt.ema_state_dict[k], ema[k])
        assert ckpt.state_dict[k] is ckpt.ema_state_dict[k]

    plain = load_network(path, prefer_ema=False)
    assert plain.ramir_spec.kwargs == ckpt.spec.kwargs
    assert torch.equal(plain.state_dict()["conv_last.bias"], swinir_small.state_dict()["conv_last.bias"])

    info = describe_checkpoint(path)
    assert info["format"] == "ramir" and info["model_name"] == "ram-swinir-small"
    assert info["parameters"] == SWINIR_SMALL_PARAMS and info["has_ema"] and info["stage"] == "pretrain"
    assert info["size_bytes"] == path.stat().st_size and info["metadata"]["iteration"] == 400


def test_state_dict_without_spec_and_shared_tensors(tmp_path, swinir_small):
    sd = dict(swinir_small.state_dict())
    path = tmp_path / "bare.safetensors"
    save_checkpoint(path, sd, ema_state_dict=sd)  # every EMA tensor shares storage with params
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "ramir" and registered_name(ckpt.spec) == "ram-swinir-small"
    assert torch.equal(ckpt.raw_state_dict["norm.weight"], sd["norm.weight"])
    tied = {"a": torch.arange(6.0), "b": torch.arange(6.0)[:3]}
    tied["c"] = tied["a"]
    save_checkpoint(tmp_path / "tied.safetensors", tied)
    back = load_checkpoint(tmp_path / "tied.safetensors").raw_state_dict
    assert torch.equal(back["c"], tied["a"]) and torch.equal(back["b"], torch.arange(3.0))


# --------------------------------------------------------------------------------------------------
# strictness


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys(tmp_path, swinir_small):
    sd = dict(swinir_small.state_dict())
    del sd["layers.1.conv.weight"]
    sd["layers.1.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys: layers\.1\.conv\.weight.*"
                                              r"unexpected keys: layers\.1\.extra\.weight"):
        load_network(sd)

    many = dict(swinir_small.state_dict())
    many.update({f"junk.{i}": torch.zeros(1) for i in range(8)})
    with pytest.raises(CheckpointError, match=r"junk\.4 \(\+3 more\)"):
        load_network(many)

    bad = dict(swinir_small.state_dict())
    bad["conv_after_body.bias"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_checkpoint(path, bad, spec=swinir_small.ramir_spec)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*conv_after_body\.bias \(7,\) != \(24,\)"):
        load_network(path)


# --------------------------------------------------------------------------------------------------
# bad files: one CheckpointError line, and `ramir info` exits 2 without a traceback


def _bad_file(tmp_path, case: str, swinir_small):
    path = tmp_path / f"{case}.pth"
    if case == "missing":
        return path
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.touch()
    elif case == "png":
        path = tmp_path / "image.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif case == "text":
        path.write_text("model: ram-swinir\n")
    elif case == "truncated_pth":
        torch.save({"params": swinir_small.state_dict()}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "truncated_safetensors":
        path = tmp_path / "cut.safetensors"
        save_checkpoint(path, swinir_small, stage="pretrain")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "unknown_network":
        torch.save({"params": {"backbone.conv.weight": torch.zeros(4, 3, 3, 3)}}, path)
    elif case == "not_weights":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    return path


BAD_CASES = {
    "missing": "not found", "directory": "is a directory", "empty": "is empty",
    "png": "not a checkpoint.*PNG image", "text": "not a checkpoint.*text file",
    "truncated_pth": "truncated or corrupt PyTorch",
    "truncated_safetensors": "truncated or corrupt safetensors",
    "unknown_network": "unknown network", "not_weights": "holds no weights",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_files_give_one_clear_error(tmp_path, capsys, swinir_small, case):
    path = _bad_file(tmp_path, case, swinir_small)
    with pytest.raises(CheckpointError, match=BAD_CASES[case]) as exc:
        load_network(path)
    assert "\n" not in str(exc.value)
    capsys.readouterr()
    assert main(["info", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.startswith("ramir: error: ") and err.count("\n") == 1


_EXECUTED: list[str] = []


def _side_effect() -> str:
    _EXECUTED.append("ran")
    return "ran"


class _Payload:
    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_code_is_refused_not_executed(tmp_path, swinir_small):
    path = tmp_path / "evil.pth"
    torch.save({"params": swinir_small.state_dict(), "hook": _Payload()}, path)
    _EXECUTED.clear()
    with pytest.raises(CheckpointError, match=r"arbitrary pickled objects.*will not be executed"):
        load_checkpoint(path)
    assert _EXECUTED == []


# --------------------------------------------------------------------------------------------------
# CLI


def test_ramir_models_lists_configs_and_checkpoints(tmp_path, capsys, monkeypatch, swinir_small):
    monkeypatch.setenv("RAMIR_HOME", str(tmp_path))
    save_checkpoint(tmp_path / "mine.safetensors", swinir_small, stage="finetune")
    torch.save({"params": swinir_small.state_dict()}, tmp_path / "ref.pth")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODEL_CONFIGS)
    assert "mine.safetensors" in out and "stage=finetune" in out and "ref.pth" in out
    assert main(["models", "--json", "--params", "--dir", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    counts = {r["name"]: r["parameters"] for r in listing["configs"]}
    assert counts["ram-swinir-small"] == SWINIR_SMALL_PARAMS
    assert counts["promptir"] == counts["ram-promptir"] == load_json("manifest_promptir_default.json")[
        "num_parameters"]
    assert {r["path"].rsplit("/", 1)[-1] for r in listing["checkpoints"]} == {"mine.safetensors", "ref.pth"}


def test_ramir_info_prints_description(tmp_path, capsys, swinir_small):
    path = tmp_path / "ref.pth"
    torch.save({"params": _prefixed(swinir_small.state_dict(), "module.")}, path)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "swinir" and info["format"] == "reference"
    assert info["parameters"] == SWINIR_SMALL_PARAMS and not info["has_ema"]
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ram-swinir-small" in out and "50,043" in out
