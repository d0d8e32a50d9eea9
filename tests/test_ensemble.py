"""Geometric self-ensemble (ramir.ensemble) and its use by the Restorer and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ramir.ensemble import VIEWS, parse_views, self_ensemble, symmetries, transform, untransform
from ramir.errors import RamirError
from ramir.inference import Restorer


@pytest.mark.parametrize("views", VIEWS)
def test_views_are_distinct_and_undone(views):
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    seen = set()
    for s in symmetries(views):
        t = transform(x, s)
        seen.add(tuple(t.flatten().tolist()))
        assert torch.equal(untransform(t, s), x)
    assert len(seen) == views


def test_unknown_view_count_is_refused():
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        symmetries(3)


@pytest.mark.parametrize("views", VIEWS)
def test_an_equivariant_restorer_is_unchanged(views):
    """A per-pixel map commutes with every flip and turn: the ensemble is the single pass."""
    x = torch.rand(1, 3, 13, 21)
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(self_ensemble(conv, x, views), conv(x), atol=1e-6, rtol=0)


def test_the_ensemble_is_the_mean_of_the_turned_back_answers():
    """A restorer that adds a ramp along the width: flipped, the ramp runs the other way, so the
    two-view mean is the input plus the ramp's average; transposed, it runs along the height."""
    x = torch.rand(1, 3, 8, 16)

    def ramp(t: torch.Tensor) -> torch.Tensor:
        return t + torch.linspace(0.0, 1.0, t.shape[-1])

    torch.testing.assert_close(self_ensemble(ramp, x, 2), x + 0.5)
    four = self_ensemble(ramp, x, 4)  # vertical flips do not move a ramp along the width
    torch.testing.assert_close(four, x + 0.5)
    torch.testing.assert_close(self_ensemble(ramp, x, 8), x + 0.5)  # transposed: along the height


def test_views_stay_on_the_8_pixel_grid():
    """A restorer that marks the borders of 8-px blocks (what a JPEG expert keys on) gives the same
    answer on every view of a 13 x 21 image, because the image is padded to whole blocks first; without
    that padding a flip would shift the blocks and the mean would blur the marks."""

    def blocks(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        rows = torch.tensor([i % 8 in (0, 7) for i in range(h)], dtype=t.dtype)[:, None]
        cols = torch.tensor([j % 8 in (0, 7) for j in range(w)], dtype=t.dtype)[None, :]
        return t + rows + cols

    x = torch.rand(1, 3, 13, 21)
    torch.testing.assert_close(self_ensemble(blocks, x, 8), blocks(x))
    unaligned = self_ensemble(blocks, x, 8, align=1)
    assert (unaligned - blocks(x)).abs().max() > 0.4


def test_the_transpose_keeps_a_bayer_phase_and_flips_do_not():
    """A restorer that marks the red sites of an RGGB mosaic (even row, even column): the identity and
    the transpose keep those sites in place, so the two-view mean is the single pass; a mirror moves them."""

    def red_sites(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        rows = (torch.arange(h) % 2 == 0)[:, None]
        cols = (torch.arange(w) % 2 == 0)[None, :]
        return t + (rows & cols).to(t.dtype)

    x = torch.rand(1, 3, 13, 21)
    torch.testing.assert_close(self_ensemble(red_sites, x, parse_views(["id", "t"])), red_sites(x))
    assert (self_ensemble(red_sites, x, parse_views(["id", "h"])) - red_sites(x)).abs().max() > 0.4


class _Shift(nn.Module):
    """Not equivariant: moves the image one pixel right (edge repeated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :1], x[..., :-1]], dim=-1)


def test_restorer_averages_views_and_refuses_other_counts():
    rgb = np.random.default_rng(0).random((16, 24, 3), dtype=np.float32)
    one = Restorer(_Shift(), torch.device("cpu"), tile=0).restore(rgb)
    two = Restorer(_Shift(), torch.device("cpu"), tile=0, ensemble=2).restore(rgb)
    # two views: shifted right once and left once (flipped), averaged, in ImageNet space -> same in [0, 1]
    left = np.concatenate([rgb[:, 1:], rgb[:, -1:]], axis=1)
    np.testing.assert_allclose(two, np.clip((one + left) / 2, 0, 1), atol=2e-6)
    with pytest.raises(RamirError, match="ensemble must be one of"):
        Restorer(_Shift(), torch.device("cpu"), ensemble=3)


def test_restore_cli_takes_ensemble(tmp_path, monkeypatch):
    from ramir.cli import main

    seen = {}

    import ramir.inference as inference

    real = inference.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(_Shift(), **{k: v for k, v in kwargs.items() if k != "backend"}, backend="torch")

    monkeypatch.setattr(inference, "load", spy)
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--ensemble", "4"]) == 0
    assert seen["ensemble"] == 4
    assert (tmp_path / "out" / "a.png").is_file()
    with pytest.raises(SystemExit):
        main(["restore", str(tmp_path / "a.png"), "--ensemble", "3"])


class _Router(nn.Module):
    """Logits from mean brightness: above 0.5 'bright', else 'dark' (a sharp softmax)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ramir.imagespace import denormalize

        m = denormalize(x).mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), (m - 0.5) * 50, (0.5 - m) * 50], dim=1)


def _routed(**settings) -> nn.Module:
    from ramir.archs import build_network

    net = build_network(
        "routed", expert_arch="nafnet",
        expert_kwargs={"width": 8, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]},
        classes=["clean", "bright", "dark"], class_to_expert=[-1, 0, 1], experts=["a", "b"], **settings,
    )
    net.router = _Router()
    net.experts = nn.ModuleList([_Shift(), _Shift()])
    net.size_multiple = 1
    return net


def test_routed_experts_keep_their_own_view_limit():
    """``ensemble_views`` caps one expert's views (recorded in the network): expert 'a' (bright photos)
    runs once however many are asked, expert 'b' (dark ones) takes them all."""
    rng = np.random.default_rng(1)
    bright = (0.8 + 0.1 * rng.random((16, 24, 3))).astype(np.float32)
    dark = (0.1 + 0.1 * rng.random((16, 24, 3))).astype(np.float32)
    net = _routed(ensemble_views={"a": ["id"]}, max_steps=1)
    assert len(net.views_for("a", 8)) == 1 and len(net.views_for("b", 8)) == 8
    assert net.views_for("b", 2) == symmetries(2)
    single = Restorer(net, torch.device("cpu"), tile=0)
    many = Restorer(net, torch.device("cpu"), tile=0, ensemble=2)
    np.testing.assert_array_equal(many.restore(bright), single.restore(bright))
    assert many.last_decisions[0].experts == ("a",)
    assert np.abs(many.restore(dark) - single.restore(dark)).max() > 1e-3
    assert many.last_decisions[0].experts == ("b",)
    for bad in ({"a": 3}, {"a": ["h"]}, {"a": ["id", "x"]}, {"a": ["id", "t", "t"]}, {"c": ["id"]}):
        with pytest.raises(ValueError, match="ensemble_views"):
            _routed(ensemble_views=bad)


def test_serve_passes_ensemble_to_load(monkeypatch):
    import ramir.inference as inference
    from ramir.cli.serve import load_restorer

    seen = []
    monkeypatch.setattr(inference, "load", lambda model, **kw: seen.append(kw) or "restorer")
    assert load_restorer("m.safetensors", "cpu", None, None, 4) == "restorer"
    assert seen[-1]["ensemble"] == 4
    load_restorer("m.safetensors", "cpu", None)
    assert seen[-1]["ensemble"] == 1
