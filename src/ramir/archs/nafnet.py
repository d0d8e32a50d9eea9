"""A compact NAFNet-style U-Net: the CPU-friendly network behind ramir's embedded default model.

Architecture after "Simple Baselines for Image Restoration" (Chen et al., ECCV 2022): blocks of
LayerNorm -> pointwise conv -> depthwise 3x3 -> SimpleGate -> simplified channel attention -> pointwise
conv, and a gated feed-forward, with learned residual scales. Only convolutions and element-wise ops:
unlike window attention these run near the CPU's peak, which is what a laptop restore needs.
Written for ramir from the paper's description. Like the other networks it maps ImageNet-normalised
RGB to ImageNet-normalised RGB, pads internally to a multiple of 2**levels and crops back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ramir.archs.descriptor import Architecture, StateDict, indices, shape
from ramir.errors import CheckpointError


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an image tensor.

    A channels_last tensor (training with ``train.channels_last``) is normalised by one fused
    ``F.layer_norm`` over its NHWC view, which is a free permute in that layout. A plain NCHW tensor
    (inference, ONNX export) takes the element-wise formula, which needs no transposes in NCHW. Both
    compute the same function (biased variance, ``eps`` inside the square root).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (stride 1, no groups) that, on a channels_last tensor, runs as one matrix
    product over the NHWC view (a free permute in that layout).

    Why: on the CPU with one thread and small batches, PyTorch sends a 1x1 convolution to its generic
    ``slow_conv2d`` path rather than oneDNN, and in training that path's backward alone took a quarter of
    a ``nafnet-s`` step; as a ``linear`` the step is 1.01-1.17x faster, depending on load
    (``benchmarks/pointwise_train.py``). The parameters, their names and shapes are those of
    ``nn.Conv2d``: checkpoints, attribution and the
    inference form see an ordinary convolution. NCHW tensors (inference, ONNX export) take the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            y = F.linear(x.permute(0, 2, 3, 1), self.weight[:, :, 0, 0], self.bias)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


class SimpleGate(nn.Module):
    """Split channels in two halves and multiply them: a non-linearity without an activation function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Spatial mixing branch and channel (feed-forward) branch, each with a learned residual scale."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = channels * dw_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = PointwiseConv(channels, dw)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Conv2d(dw // 2, dw // 2, 1)  # simplified channel attention: pool -> 1x1 conv
        self.conv3 = PointwiseConv(dw // 2, channels)
        ffn = channels * ffn_expand
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = PointwiseConv(channels, ffn)
        self.conv5 = PointwiseConv(ffn // 2, channels)
        # residual scales start at zero: each block begins as the identity, which trains stably
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = y * self.sca(F.adaptive_avg_pool2d(y, 1))
        x = x + self.conv3(y) * self.beta
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + y * self.gamma

    def folded(self) -> FoldedNAFBlock:
        """The same function rewritten for inference (:class:`FoldedNAFBlock`)."""
        return FoldedNAFBlock(self)


def _conv1x1(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1)
    conv.weight.data = weight[:, :, None, None].clone()
    conv.bias.data = bias.clone()
    return conv


def _rows(conv: nn.Conv2d, rows: slice) -> nn.Conv2d:
    """The output channels ``rows`` of a (pointwise or depthwise) convolution, as a convolution."""
    out = rows.stop - rows.start
    depthwise = conv.groups > 1
    part = nn.Conv2d(out if depthwise else conv.in_channels, out, conv.kernel_size, padding=conv.padding,
                     groups=out if depthwise else 1)
    part.weight.data = conv.weight.detach()[rows].clone()
    part.bias.data = conv.bias.detach()[rows].clone()
    return part


class FoldedNAFBlock(nn.Module):
    """A :class:`NAFBlock` rewritten for inference: the same function (to float rounding), fewer passes
    over memory. Built from a trained block; not for training (its parameters are derived).

    Why: at full resolution a NAF block is memory-bound, and onnxruntime spent more time on the
    LayerNorms' channel reductions (strided in NCHW) and element-wise ops than in the convolutions.
    The rewrites, each exact algebra:

    - LayerNorm's affine (γ, β) moves into the 1x1 conv after it: W(γ⊙x̂ + β) + b = (W·diag γ)x̂ + (Wβ + b).
    - The residual scales move into the conv before them: (W y + b)⊙β = (diag β·W) y + β⊙b.
    - The channel mean and variance are 1x1 convolutions with weights 1/C (a GEMM, not a strided
      reduction).
    - SimpleGate's halves come from two convolutions (output rows split) instead of a Split that copies.
    """

    def __init__(self, block: NAFBlock) -> None:
        super().__init__()
        channels = block.norm1.weight.numel()
        self.eps = block.norm1.eps
        like = block.norm1.weight.detach()
        self.register_buffer("mean_weight", torch.full((1, channels, 1, 1), 1.0 / channels, dtype=like.dtype,
                                                       device=like.device))

        def after_norm(norm: LayerNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
            w = conv.weight.detach()[:, :, 0, 0]
            return _conv1x1(w * norm.weight.detach()[None, :], conv.bias.detach() + w @ norm.bias.detach())

        def scaled(conv: nn.Conv2d, scale: torch.Tensor) -> nn.Conv2d:
            s = scale.detach().reshape(-1)
            return _conv1x1(conv.weight.detach()[:, :, 0, 0] * s[:, None], conv.bias.detach() * s)

        conv1, conv4 = after_norm(block.norm1, block.conv1), after_norm(block.norm2, block.conv4)
        dw, ffn = conv1.out_channels // 2, conv4.out_channels // 2
        first, second = slice(0, dw), slice(dw, 2 * dw)
        self.conv1a, self.conv1b = _rows(conv1, first), _rows(conv1, second)
        self.conv2a, self.conv2b = _rows(block.conv2, first), _rows(block.conv2, second)
        self.sca = _conv1x1(block.sca.weight.detach()[:, :, 0, 0], block.sca.bias.detach())
        self.conv3 = scaled(block.conv3, block.beta)
        self.conv4a, self.conv4b = _rows(conv4, slice(0, ffn)), _rows(conv4, slice(ffn, 2 * ffn))
        self.conv5 = scaled(block.conv5, block.gamma)

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        d = x - F.conv2d(x, self.mean_weight)
        return d * torch.rsqrt(F.conv2d(d * d, self.mean_weight) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self._normalised(x)
        y = self.conv2a(self.conv1a(n)) * self.conv2b(self.conv1b(n))
        y = y * self.sca(y.mean((2, 3), keepdim=True))
        x = x + self.conv3(y)
        n = self._normalised(x)
        return x + self.conv5(self.conv4a(n) * self.conv4b(n))


class NAFNet(nn.Module):
    """U-Net of NAF blocks. ``enc_blocks``/``dec_blocks`` give the blocks per level (coarser levels
    double the width); ``middle_blocks`` run at the coarsest level."""

    def __init__(
        self,
        *,
        in_chans: int = 3,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1),
        dw_expand: int = 2,
        ffn_expand: int = 2,
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks need the same number of levels")
        self.intro = nn.Conv2d(in_chans, width, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(ch, dw_expand, ffn_expand) for _ in range(n)]))
            self.downs.append(nn.Conv2d(ch, ch * 2, 2, stride=2))
            ch *= 2
        self.middle = nn.Sequential(*[NAFBlock(ch, dw_expand, ffn_expand) for _ in range(middle_blocks)])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(PointwiseConv(ch, ch * 2, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(ch, dw_expand, ffn_expand) for _ in range(n)]))
        self.ending = nn.Conv2d(width, in_chans, 3, padding=1)
        self.size_multiple = 2 ** len(enc_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        inp = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
        feat = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.middle(feat)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            feat = decoder(up(feat) + skip)
        out = self.ending(feat) + inp
        return out[..., :h, :w]


# ------------------------------------------------------------------------------------- descriptor
def _looks_like(sd: StateDict) -> bool:
    return "intro.weight" in sd and "ending.weight" in sd and any(k.startswith("downs.") for k in sd)


def _detect(sd: StateDict) -> dict:
    """Width from ``intro``, blocks per level from the block indices, expansions from conv shapes."""
    width, in_chans = shape(sd, "intro.weight", "NAFNet")[:2]
    levels = indices(sd, r"downs\.(\d+)\.", "NAFNet")  # every level has one, even without blocks

    def blocks(prefix: str, level: int | None = None) -> int:
        head = f"{prefix}.{level}." if level is not None else f"{prefix}."
        return len({k[len(head):].split(".")[0] for k in sd if k.startswith(head) and k.endswith(".beta")})

    first = next((k[: -len(".norm1.weight")] for k in sd if k.endswith(".norm1.weight")), None)
    if first is None:
        raise CheckpointError("looks like NAFNet but has no blocks (no '*.norm1.weight')")
    ch = shape(sd, f"{first}.norm1.weight", "NAFNet")[0]
    return {
        "in_chans": in_chans, "width": width,
        "enc_blocks": [blocks("encoders", i) for i in range(len(levels))], "middle_blocks": blocks("middle"),
        "dec_blocks": [blocks("decoders", i) for i in range(len(levels))],
        "dw_expand": shape(sd, f"{first}.conv1.weight", "NAFNet")[0] // ch,
        "ffn_expand": shape(sd, f"{first}.conv4.weight", "NAFNet")[0] // ch,
    }


ARCHITECTURE = Architecture(
    name="nafnet", display_name="NAFNet", network=NAFNet,
    size_multiple=lambda kw: 2 ** len(kw.get("enc_blocks", (1, 1, 1))),
    bytes_per_pixel=lambda kw: int(4 * int(kw.get("width", 32)) * 16 * 1.5),
    checkpoint_blocks=(NAFBlock,),
    looks_like=_looks_like, detect=_detect,
    expected_keys=("intro.weight", "encoders.0.0.conv1.weight", "ending.weight"),
)
