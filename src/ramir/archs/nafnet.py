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
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Conv2d(dw // 2, dw // 2, 1)  # simplified channel attention: pool -> 1x1 conv
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        ffn = channels * ffn_expand
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        # residual scales start at zero: each block begins as the identity, which trains stably
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = y * self.sca(F.adaptive_avg_pool2d(y, 1))
        x = x + self.conv3(y) * self.beta
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + y * self.gamma


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
            self.ups.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 1, bias=False), nn.PixelShuffle(2)))
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
