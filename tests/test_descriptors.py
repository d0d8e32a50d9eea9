"""Adding a network is one descriptor: a test-only network, registered here, is then built by name,
saved and reloaded (with and without its recorded config), tiled, restored, checkpointed in training
and exported, without any other file knowing it. And no module outside ``archs/`` names a network."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ramir
from ramir.archs import architecture, architectures, create_model, network_spec, unregister_architecture
from ramir.archs.descriptor import Architecture, shape
from ramir.checkpoints import detect_architecture, load_network, save_checkpoint
from ramir.errors import CheckpointError
from ramir.inference import bytes_per_pixel, network_multiple
from ramir.training.memory import checkpoint_blocks

SRC = Path(__file__).resolve().parents[1] / "src" / "ramir"


class TinyBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x).relu()


class TinyPadded(nn.Module):
    """A residual conv net that pads to a multiple of 4 (as a U-Net with two down-samplings would)."""

    def __init__(self, *, width: int = 4, blocks: int = 2) -> None:
        super().__init__()
        self.tiny_head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*(TinyBlock(width) for _ in range(blocks)))
        self.tiny_tail = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect")
        return (xp + self.tiny_tail(self.body(self.tiny_head(xp))))[..., :h, :w]


def _detect(sd) -> dict:
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    return {"width": shape(sd, "tiny_head.weight", "tiny")[0], "blocks": blocks}


TINY = Architecture(
    name="tiny-test", network=TinyPadded, size_multiple=lambda kw: 4,
    bytes_per_pixel=lambda kw: 100 * kw.get("width", 4), checkpoint_blocks=(TinyBlock,),
    looks_like=lambda sd: "tiny_head.weight" in sd, detect=_detect, expected_keys=("tiny_head.weight",),
)


@pytest.fixture
def tiny():
    ramir.register_architecture(TINY)
    try:
        yield TINY
    finally:
        unregister_architecture(TINY.name)


def test_a_registered_network_works_everywhere(tiny, tmp_path):
    net = create_model("tiny-test", width=6, blocks=3)
    assert network_spec(net).to_dict() == {"arch": "tiny-test", "kwargs": {"width": 6, "blocks": 3}}
    assert network_multiple(net) == 4 and bytes_per_pixel(net) == 600

    # a checkpoint with its config, and a bare state dict recognised by the descriptor's detector
    save_checkpoint(tmp_path / "tiny.safetensors", net)
    again = load_network(tmp_path / "tiny.safetensors")
    assert type(again) is TinyPadded and network_spec(again).kwargs == {"width": 6, "blocks": 3}
    assert detect_architecture(net.state_dict()).to_dict() == network_spec(net).to_dict()
    bare = load_network({k: v.clone() for k, v in net.state_dict().items()})
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(bare(x), net(x))

    # inference rounds the tile to the descriptor's multiple and pads images smaller than it
    sizes: list[tuple[int, int]] = []
    handle = net.register_forward_pre_hook(lambda _m, args: sizes.append(tuple(args[0].shape[-2:])))
    restorer = ramir.load(net, device="cpu", tile=17, overlap=8)
    assert restorer.multiple == 4
    assert restorer.restore_tensor(torch.rand(1, 3, 37, 41)).shape == (1, 3, 37, 41)
    assert sizes[0] == (16, 16) and all(min(s) >= 16 and max(s) < 20 for s in sizes), sizes
    sizes.clear()
    assert restorer.restore_tensor(torch.rand(1, 3, 2, 3)).shape == (1, 3, 2, 3)
    handle.remove()
    assert sizes == [(4, 4)]

    # training's activation checkpointing finds the descriptor's blocks
    assert checkpoint_blocks(create_model("tiny-test", blocks=2)) == 2


def test_export_follows_the_descriptor(tiny, tmp_path):
    pytest.importorskip("onnx")
    from ramir.errors import RamirError
    from ramir.export import export_onnx

    net = create_model("tiny-test")
    report = export_onnx(net, tmp_path / "tiny.onnx", tile=16)
    assert report.path.is_file()
    with pytest.raises(RamirError, match="not a multiple"):
        export_onnx(create_model("tiny-test"), tmp_path / "other.onnx", tile=18)  # not a multiple: refused
    ramir.register_architecture(Architecture(**{**TINY.__dict__, "exportable": False}), replace=True)
    with pytest.raises(RamirError, match="cannot be exported to ONNX"):
        export_onnx(create_model("tiny-test"), tmp_path / "never.onnx", tile=16)
    assert not (tmp_path / "never.onnx").exists()


def test_unknown_state_dicts_name_every_family(tiny):
    with pytest.raises(CheckpointError) as err:
        detect_architecture({"foo.weight": torch.zeros(1)})
    message = str(err.value)
    for arch in architectures():
        for key in arch.expected_keys:
            assert key in message
    assert "\n" not in message


def test_registering_twice_is_refused(tiny):
    with pytest.raises(ValueError, match="already registered"):
        ramir.register_architecture(TINY)
    with pytest.raises(KeyError, match="unknown architecture"):
        architecture("no-such-net")


def test_no_module_outside_archs_names_a_network():
    """The rule of issue 20: facts about a network live in its descriptor."""
    names = [a.name for a in architectures()]
    pattern = re.compile("|".join(rf'"{re.escape(n)}"' for n in names))
    offenders = []
    for path in SRC.rglob("*.py"):
        if "archs" in path.relative_to(SRC).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_import_ramir_imports_no_network():
    """The registry imports a network's module on first use: ``import ramir`` stays cheap."""
    code = ("import sys, ramir; "
            "print(sorted(m for m in sys.modules if m.startswith('ramir.archs.')"
            " and m != 'ramir.archs.descriptor'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["swinir", "promptir", "restormer", "rfr", "nafnet", "routed"])
def test_constructors_are_keyword_only_and_refuse_unknown_arguments(name):
    """One rule for every network: the reference's keyword names, nothing positional, no silent extras."""
    cls = architecture(name).network
    with pytest.raises(TypeError):
        cls(3)
    with pytest.raises(TypeError, match="no_such_option"):
        cls(no_such_option=1)
