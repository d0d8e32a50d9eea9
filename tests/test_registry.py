"""One test over every registered network: builds, pads to any size, back-propagates, and records its spec."""

from __future__ import annotations

import pytest
import torch

import ramir
from ramir.archs import MODEL_CONFIGS, network_spec

# the full-size reference configs are covered by their own equivalence tests
HEAVY = {"ram-swinir", "promptir", "ram-promptir", "promptir-small"}
# RAM++'s RFR networks need a DINOv2 backbone (a download): tests/test_rfr.py runs them on a tiny one
HEAVY |= {name for name in MODEL_CONFIGS if MODEL_CONFIGS[name].arch == "rfr"}
LIGHT = [n for n in ramir.list_models() if n not in HEAVY]


@pytest.mark.parametrize("name", LIGHT)
def test_forward_backward_any_size(name):
    torch.manual_seed(0)
    net = ramir.create_model(name)
    x = torch.randn(1, 3, 37, 45, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.abs().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    spec = network_spec(net)
    assert spec is not None and spec.arch == MODEL_CONFIGS[name].arch
    assert ramir.attributable_layers(net), "every network has layers MAC can rank"


def test_create_model_overrides_and_drops_none():
    net = ramir.create_model("ram-swinir-small", embed_dim=12, depths=[1], num_heads=[2], drop_path_rate=None)
    assert network_spec(net).kwargs["embed_dim"] == 12
    assert "drop_path_rate" not in network_spec(net).kwargs
    assert net.conv_first.weight.shape[0] == 12


def test_unknown_model_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        ramir.create_model("nope")


def test_nafnet_blocks_start_as_identity():
    """Zero-initialised residual scales (beta, gamma): every untrained NAF block is exactly the identity,
    so an untrained NAFNet is the plain conv U-Net around its blocks (not the identity as a whole: the
    intro/ending convolutions are random)."""
    torch.manual_seed(0)
    net = ramir.create_model("nafnet-s", enc_blocks=[1, 2], middle_blocks=1, dec_blocks=[2, 1]).eval()
    blocks = [m for m in net.modules() if type(m).__name__ == "NAFBlock"]
    assert len(blocks) == 7
    with torch.no_grad():
        for block in blocks:
            x = torch.randn(2, block.conv1.in_channels, 12, 10)
            assert torch.equal(block(x), x)
        x = torch.randn(1, 3, 21, 34)
        y = net(x)
        # the same network with every block taken out gives the same output, bit for bit
        for seq in [*net.encoders, net.middle, *net.decoders]:
            for i in range(len(seq)):
                seq[i] = torch.nn.Identity()
        assert torch.equal(net(x), y)
        assert not torch.allclose(y, x, atol=1e-3)  # the whole network is not the identity
        # non-zero scales make the blocks contribute: the checks above are not vacuous
        block = blocks[0]
        torch.nn.init.uniform_(block.beta, 0.1, 0.3)
        torch.nn.init.uniform_(block.gamma, 0.1, 0.3)
        x = torch.randn(2, block.conv1.in_channels, 12, 10)
        assert not torch.allclose(block(x), x, atol=1e-4)
