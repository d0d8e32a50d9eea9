"""The compact NAFNet behind the default model: padding, detection from a bare state dict, layer list."""

from __future__ import annotations

import pytest
import torch

import ramir
from ramir.archs import network_spec
from ramir.checkpoints import detect_architecture


def _random(net: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net.eval()


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(width=8, enc_blocks=[2, 0], middle_blocks=1, dec_blocks=[1, 3], ffn_expand=4),
     dict(width=8, enc_blocks=[0], middle_blocks=0, dec_blocks=[1], dw_expand=1)],
)
def test_bare_state_dict_is_detected_and_rebuilt(kwargs):
    net = _random(ramir.create_model("nafnet-s", **kwargs))
    spec = detect_architecture(net.state_dict())
    assert spec.arch == "nafnet"
    for key, value in network_spec(net).kwargs.items():
        assert spec.kwargs[key] == value
    rebuilt = ramir.load_network({k: v.clone() for k, v in net.state_dict().items()})
    x = torch.randn(1, 3, 21, 34)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))


def test_padding_is_cropped_and_equals_explicit_reflect_padding():
    net = _random(ramir.create_model("nafnet-s"))
    x = torch.randn(1, 3, 21, 34)
    padded = torch.nn.functional.pad(x, (0, 6, 0, 3), mode="reflect")
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :21, :34], atol=1e-6)


def test_layers_are_convs_norms_and_blocks():
    net = ramir.create_model("nafnet-s")
    kinds = {type(net.get_submodule(n)).__name__ for n in ramir.attributable_layers(net)}
    assert kinds == {"Conv2d", "PointwiseConv", "LayerNorm2d", "NAFBlock"}  # PointwiseConv is an nn.Conv2d


def test_layer_norm_takes_the_fused_path_in_channels_last_with_the_same_result():
    from ramir.archs.nafnet import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y, y_cl = norm(x), norm(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)  # the fused path kept the layout
    assert torch.allclose(y, y_cl, atol=1e-5)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_cl,) = torch.autograd.grad(y_cl, x_cl, g)
    assert torch.allclose(gx, gx_cl, atol=1e-4)


def test_nafnet_in_channels_last_matches_nchw():
    torch.manual_seed(0)
    net = ramir.create_model("nafnet-s").eval()
    for m in net.modules():  # non-zero residual scales, so every block contributes
        if hasattr(m, "beta"):
            torch.nn.init.uniform_(m.beta, 0.1, 0.3)
            torch.nn.init.uniform_(m.gamma, 0.1, 0.3)
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        y = net(x)
        net.to(memory_format=torch.channels_last)
        y_cl = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(y, y_cl, atol=1e-4)


def _non_trivial(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Default initialisation, then residual scales and norm affines away from 0 / 1, so that every
    folding rule of FoldedNAFBlock changes the weights it moves."""
    from ramir.archs.nafnet import NAFBlock

    torch.manual_seed(seed)
    with torch.no_grad():
        for b in net.modules():
            if isinstance(b, NAFBlock):
                b.beta.normal_(0, 0.5)
                b.gamma.normal_(0, 0.5)
                for norm in (b.norm1, b.norm2):
                    norm.weight.normal_(1, 0.2)
                    norm.bias.normal_(0, 0.1)
    return net.eval()


# FoldedNAFBlock computes the same function in another order. Largest error relative to the output's
# largest magnitude, measured over 5 seeds (this test's networks) under ATEN_CPU_CAPABILITY=default and
# avx2 with 1 and 2 threads: 1.8e-7 for the network, 8.1e-8 for a block. The bound is 50x that.
FOLD_RTOL = 1e-5


@pytest.mark.parametrize("kwargs", [{}, dict(width=8, enc_blocks=[2, 0], middle_blocks=1, dec_blocks=[1, 3],
                                          dw_expand=1, ffn_expand=4)])
def test_folded_network_computes_the_same_function(kwargs):
    from ramir.archs import fold_for_inference
    from ramir.archs.nafnet import FoldedNAFBlock, NAFBlock

    net = _non_trivial(ramir.create_model("nafnet-s", **kwargs))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    blocks = sum(isinstance(m, NAFBlock) for m in net.modules())
    folded = fold_for_inference(net)
    assert not any(isinstance(m, NAFBlock) for m in folded.modules())
    assert any(isinstance(m, FoldedNAFBlock) for m in folded.modules())
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        y, y_folded = net(x), folded(x)
    assert (y_folded - y).abs().max() <= FOLD_RTOL * y.abs().max()
    # the original is untouched: training, attribution and checkpoints keep their blocks
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert sum(isinstance(m, NAFBlock) for m in net.modules()) == blocks


def test_folded_block_on_a_shifted_input_and_nothing_to_fold():
    from ramir.archs import fold_for_inference
    from ramir.archs.nafnet import NAFBlock

    block = _non_trivial(torch.nn.Sequential(NAFBlock(16)), seed=3)[0]
    z = torch.randn(2, 16, 24, 20) * 3 + 1  # a mean far from 0: the variance must not cancel
    with torch.no_grad():
        y = block(z)
        assert (block.folded()(z) - y).abs().max() <= FOLD_RTOL * y.abs().max()
    plain = torch.nn.Conv2d(3, 3, 3)
    assert fold_for_inference(plain) is plain  # nothing foldable: no copy


def test_pointwise_conv_as_a_matrix_product_matches_the_convolution():
    """channels_last takes F.linear on the NHWC view, NCHW the convolution: same values and gradients."""
    from ramir.archs.nafnet import PointwiseConv

    torch.manual_seed(0)
    conv = PointwiseConv(16, 32)
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (32, 16, 1, 1)
    x = torch.randn(2, 16, 12, 20, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_cl = conv(x), conv(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    # measured under ATEN_CPU_CAPABILITY=default and avx2, 1 and 2 threads: outputs 3.6e-7 apart, gradients
    # 3.4e-5 (4e-7 of the largest, 85); bounds 1e-5 and 1e-5 of the largest gradient, about 25x
    assert torch.allclose(y, y_cl, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
    grads_cl = torch.autograd.grad(y_cl, [x_cl, conv.weight, conv.bias], g)
    for a, b in zip(grads, grads_cl):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
