"""The routed network (router + experts), its checkpoint, routing in the Restorer, router training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ramir
from ramir.archs import build_network
from ramir.checkpoints import load_network, save_checkpoint
from ramir.training.router import assemble, train_router

NAF = dict(width=8, enc_blocks=[1], middle_blocks=1, dec_blocks=[1])


def routed(bias: list[float] | None = None):
    torch.manual_seed(0)
    net = build_network(
        "routed",
        classes=["clean", "noise", "blur"],
        class_to_expert=[-1, 0, 1],
        experts=["noise", "deblur"],
        expert_kwargs=NAF,
        router_width=8,
        route_size=32,
    )
    for expert in net.experts:  # non-zero residual scales: the experts differ from the identity
        for m in expert.modules():
            if hasattr(m, "beta"):
                torch.nn.init.uniform_(m.beta, 0.2, 0.4)
                torch.nn.init.uniform_(m.gamma, 0.2, 0.4)
    if bias is not None:
        with torch.no_grad():
            net.router.head[-1].weight.zero_()
            net.router.head[-1].bias.copy_(torch.tensor(bias))
    return net.eval()


def test_each_image_goes_to_the_expert_of_its_class_and_clean_stays_unchanged():
    x = torch.randn(2, 3, 24, 40)
    for bias, expert in (([5.0, 0, 0], None), ([0, 5.0, 0], 0), ([0, 0, 5.0], 1)):
        net = routed(bias)
        with torch.no_grad():
            y = net(x)
        if expert is None:
            assert torch.equal(y, x) and net.route_names(x) == ["clean", "clean"]
        else:
            assert torch.allclose(y, net.experts[expert](x), atol=1e-6)
            assert net.route(x) == [expert, expert]


def test_routed_checkpoint_round_trip(tmp_path):
    net = routed([0, 1.0, 0.5])
    save_checkpoint(tmp_path / "r.safetensors", net, stage="routed")
    back = load_network(tmp_path / "r.safetensors")
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    assert back.classes == ["clean", "noise", "blur"] and back.class_to_expert == [-1, 0, 1]


def test_restorer_routes_the_whole_image_once_then_tiles_with_that_expert():
    net = routed([0, 0, 5.0])
    img = np.random.default_rng(0).random((56, 72, 3)).astype(np.float32)
    tiled = ramir.load(net, device="cpu", tile=32, overlap=8)
    out = tiled.restore(img)
    assert tiled.last_routes == ["blur"]
    direct = ramir.load(net.experts[1], device="cpu", tile=32, overlap=8).restore(img)
    assert np.array_equal(out, direct)  # every tile went through the blur expert
    clean = ramir.load(routed([5.0, 0, 0]), device="cpu", tile=32)
    assert np.array_equal(clean.restore(img), img) and clean.last_routes == ["clean"]


def test_router_learns_to_tell_noise_from_clean(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(6):  # smooth images: Gaussian noise on them is easy to see
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(small, (48, 48), interpolation=cv2.INTER_CUBIC))
    recipe = tmp_path / "router.yaml"
    recipe.write_text(
        "name: r\nstage: finetune\nmodel: {name: nafnet-s}\n"
        "data:\n  train:\n    patch_size: 32\n    samples_per_epoch: 256\n    sources:\n"
        "      - {name: clean, root: clean, degradation: {kind: identity}}\n"
        "      - {name: noisy, root: clean, degradation: {kind: noise, sigma: [30, 50]}}\n"
    )
    torch.set_num_threads(1)
    _, log = train_router(
        recipe,
        {"clean": "clean", "noisy": "noise"},
        ["clean", "noise"],
        iterations=60,
        batch_size=8,
        log_every=20,
    )
    assert log[-1]["accuracy"] >= 0.9, log
    with pytest.raises(ramir.errors.ConfigError, match="without a router class"):
        train_router(recipe, {"clean": "clean"}, ["clean", "noise"], iterations=1)


def test_assemble_takes_the_experts_ema_weights(tmp_path):
    paths = {}
    for i, name in enumerate(["noise", "deblur"]):
        torch.manual_seed(i)
        raw = ramir.create_model("nafnet", **NAF)
        ema = ramir.create_model("nafnet", **NAF)
        paths[name] = Path(tmp_path / f"{name}.safetensors")
        save_checkpoint(paths[name], raw, ema_state_dict=ema.state_dict())
    router = routed().router
    net = assemble(router, ["clean", "noise", "blur"], [-1, 0, 1], paths, route_size=32)
    for expert, path in zip(net.experts, paths.values()):
        from ramir.checkpoints import load_checkpoint

        ema = load_checkpoint(path).ema_state_dict
        assert all(torch.equal(expert.state_dict()[k], v) for k, v in ema.items())
    torch.manual_seed(5)
    other = ramir.create_model("nafnet", width=4, enc_blocks=[1], middle_blocks=1, dec_blocks=[1])
    save_checkpoint(tmp_path / "other.safetensors", other)
    with pytest.raises(ramir.errors.ConfigError, match="share one"):
        assemble(
            router,
            ["clean", "noise", "blur"],
            [-1, 0, 1],
            {"noise": paths["noise"], "deblur": tmp_path / "other.safetensors"},
        )


def test_export_takes_one_expert_of_a_routed_network(tmp_path, capsys):
    from ramir.cli import main

    save_checkpoint(tmp_path / "r.safetensors", routed([0, 1.0, 0]), stage="routed")
    assert (
        main(["export", str(tmp_path / "r.safetensors"), "-o", str(tmp_path / "x.onnx"), "--tile", "32"]) == 2
    )
    err = capsys.readouterr().err
    assert "--expert noise|deblur" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    assert (
        main(
            [
                "export",
                str(tmp_path / "r.safetensors"),
                "-o",
                str(tmp_path / "x.onnx"),
                "--tile",
                "32",
                "--expert",
                "deblur",
            ]
        )
        == 0
    )
    assert (tmp_path / "x.onnx").is_file()


def test_an_unsure_clean_verdict_goes_to_the_most_likely_expert():
    net = routed([2.0, 1.0, 0.0])  # softmax: clean 0.67, noise 0.24, blur 0.09
    x = torch.randn(1, 3, 24, 24)
    assert net.route(x) == [-1]  # argmax, no threshold: left unchanged
    net.keep_threshold = 0.8  # "leave it" now needs 80 %: the most likely expert restores it instead
    assert net.route(x) == [0] and net.route_names(x) == ["noise"]
    net.keep_threshold = 0.6
    assert net.route(x) == [-1]
    confident = routed([0.0, 0.0, 5.0])
    confident.keep_threshold = 0.99  # a class with an expert is never held back by the threshold
    assert confident.route(x) == [1]


def test_class_bias_shifts_routing_and_travels_with_the_checkpoint(tmp_path):
    x = torch.randn(1, 3, 24, 24)
    net = routed([2.0, 1.0, 0.0])
    assert net.route_names(x) == ["clean"]
    net.class_bias = {"blur": 2.5}  # the logits become 2.0, 1.0, 2.5: blur wins
    assert net.route_names(x) == ["blur"]
    assert torch.allclose(net.route_logits(x)[0], torch.tensor([2.0, 1.0, 2.5]))
    biased = build_network("routed", classes=["clean", "noise", "blur"], class_to_expert=[-1, 0, 1],
                           experts=["noise", "deblur"], expert_kwargs=NAF, router_width=8, route_size=32,
                           class_bias={"blur": 2.5})
    biased.load_state_dict(net.state_dict())
    save_checkpoint(tmp_path / "b.safetensors", biased)
    loaded = load_network(tmp_path / "b.safetensors")
    assert loaded.class_bias == {"blur": 2.5} and loaded.route_names(x) == ["blur"]
    with pytest.raises(ValueError, match="not a class"):
        build_network("routed", classes=["clean", "noise"], class_to_expert=[-1, 0], experts=["noise"],
                      expert_kwargs=NAF, class_bias={"rain": 1.0})
