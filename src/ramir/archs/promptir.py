"""PromptIR, the network of RAM-PromptIR (RAM_SPEC §6).

PromptIR: Potlapalli, Zamir, Khan, Khan, "PromptIR: Prompting for All-in-One Blind Image Restoration",
NeurIPS 2023. Its backbone is Restormer (Zamir et al., CVPR 2022): a 4-level U-Net of transformer
blocks with multi-Dconv-head *transposed* attention (MDTA, attention across channels, not pixels) and
a gated-Dconv feed-forward network (GDFN). PromptIR adds, at the three decoder levels, a prompt
generation block (a softmax-weighted sum of learned prompt tensors, resized and convolved) whose output
is concatenated to the features and fused by one transformer block (`noise_level*`) and a 1x1 conv
(`reduce_noise_level*`).

Written from the paper and the fixtures' description; module and parameter names follow the reference
so its checkpoints load (the original's unused `chnl_reduce*` / `reduce_noise_channel*` convs are not
built, as in RAM). The network works on ImageNet-normalised NCHW input and pads/crops internally; it has
no mask argument and no `mask_token`: masking happens outside the network (`ramir.masking`).

Execution: the fast path runs float32 channels-last on CPU; at inference (no autograd) a transformer
block that no hook observes runs band by band over rows (`BAND_PIXELS`, with the one-row halo its 3x3
depthwise convs read; MDTA accumulates q k^T and the norms over bands), so no 2x-hidden or 3C-channel
map is ever allocated whole. Hooks always see whole tensors. `ramir.archs.common.straightforward_path`
selects the literal NCHW implementation, kept for benchmarks and tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ramir.archs.common import observed as _observed
from ramir.archs.common import straightforward_path_enabled
from ramir.archs.descriptor import Architecture, StateDict, differing, expansion_factor, indices, shape
from ramir.errors import CheckpointError, ConfigError

_LN_EPS = 1e-5
_NORMALIZE_EPS = 1e-12  # F.normalize's default, used by MDTA on q and k
PAD_MULTIPLE = 16  # as the reference (8 would do for the three 2x down-samplings)


class PromptIRConfigError(ConfigError, ValueError):
    """An impossible PromptIR configuration (a ValueError too, for callers outside the CLI)."""


# Pixels per band of rows when an unobserved block, attention or FFN runs piecewise at inference.
BAND_PIXELS = 4096


def _bands(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """(r0, r1, lo, hi): bands of rows [r0, r1) of about BAND_PIXELS pixels and the rows [lo, hi) a
    3x3 conv needs to compute them (one more on each side inside the map)."""
    rows = max(1, BAND_PIXELS // w)
    return [(r0, min(r0 + rows, h), max(r0 - 1, 0), min(r0 + rows + 1, h)) for r0 in range(0, h, rows)]


def _bands_allowed(module: nn.Module, x: torch.Tensor) -> bool:
    """Band-wise execution: fast path, CPU channels-last inference, no hook on the module's tree."""
    return (x.device.type == "cpu" and _is_channels_last(x) and x.shape[-2] > 1
            and not straightforward_path_enabled()
            and not torch.is_grad_enabled() and not _observed(module))


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------------
# Layer normalisation over channels. The `body` sees (B, H*W, C) tokens, as in the reference, so that
# MAC hooks on `*.body` observe the same layout.


class WithBias_LayerNorm(nn.Module):
    """LayerNorm over the last dim: (x - mean) / sqrt(var + 1e-5) * weight + bias (biased variance)."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if straightforward_path_enabled():
            mu = x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            return (x - mu) / torch.sqrt(var + _LN_EPS) * self.weight + self.bias
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, _LN_EPS)


class BiasFree_LayerNorm(nn.Module):
    """x / sqrt(var + 1e-5) * weight: scales by the (centred) spread but does not subtract the mean."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + _LN_EPS) * self.weight


class LayerNorm(nn.Module):
    """Channel LayerNorm of an NCHW map, computed on (B, H*W, C) tokens by `body`."""

    def __init__(self, dim: int, layer_norm_type: str) -> None:
        super().__init__()
        self.body = BiasFree_LayerNorm(dim) if layer_norm_type == "BiasFree" else WithBias_LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.body(x.permute(0, 2, 3, 1).reshape(b, h * w, c))  # (B, HW, C); a view if channels-last
        out = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)  # a channels-last view
        return out if _is_channels_last(x) else out.contiguous()  # keep the caller's layout


# --------------------------------------------------------------------------------------------------
# Restormer transformer block


class FeedForward(nn.Module):
    """Gated-Dconv FFN: 1x1 expand to 2 x hidden, 3x3 depthwise, GELU(half) * other half, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _bands_allowed(self, x):
            return self._forward_bands(x)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        if not _is_channels_last(x):
            return self.project_out(F.gelu(x1) * x2)
        # In channels-last the half is strided; erf-GELU runs about 2x faster on a dense copy. Without
        # autograd that copy, ours alone, also takes the GELU and the gate in place (no fresh buffers).
        x1 = x1.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled():
            return self.project_out(F.gelu(x1) * x2)
        return self.project_out(torch.ops.aten.gelu_(x1).mul_(x2))

    def _forward_bands(
        self, x: torch.Tensor, norm: nn.Module | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inference when no hook watches: the same FFN (of ``norm(x)`` if given, plus ``residual`` if
        given) on bands of rows and the one-row halo the 3x3 depthwise conv reads, so the 2 x hidden
        intermediates stay a few MB instead of 100+ MB at 256x256. Every output pixel comes from the
        same inputs through the same operations; the image borders get the conv's zero padding.

        The gated half and the gate are computed as two dense maps (``project_in`` and the depthwise
        conv act per output channel, so their two halves are independent): no strided half to copy
        before the GELU. ``project_out`` accumulates into the output band (:func:`_pointwise_into`).
        """
        b, _, h, w = x.shape
        hidden = self.project_out.in_channels

        def half(param: torch.Tensor | None, i: int) -> torch.Tensor | None:
            return None if param is None else param[i * hidden : (i + 1) * hidden]

        halves = [(half(self.project_in.weight, i), half(self.project_in.bias, i),
                   half(self.dwconv.weight, i), half(self.dwconv.bias, i)) for i in range(2)]
        out = torch.empty((b, self.project_out.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        for r0, r1, lo, hi in _bands(h, w):
            band = x[:, :, lo:hi] if norm is None else norm(x[:, :, lo:hi])
            gated, gate = (F.conv2d(F.conv2d(band, w_in, b_in), w_dw, b_dw, padding=1, groups=hidden)
                           for w_in, b_in, w_dw, b_dw in halves)
            gated, gate = gated[:, :, r0 - lo : r1 - lo], gate[:, :, r0 - lo : r1 - lo]
            # (for one image a band of rows is already dense: the GELU runs in place on the conv output)
            gated = torch.ops.aten.gelu_(gated.contiguous(memory_format=torch.channels_last)).mul_(gate)
            _pointwise_into(self.project_out, gated, out[:, :, r0:r1],
                            None if residual is None else residual[:, :, r0:r1])
        return out


def _pointwise_into(
    conv: nn.Conv2d, x: torch.Tensor, out: torch.Tensor, residual: torch.Tensor | None = None
) -> None:
    """``out = conv(x) [+ residual]`` for a 1x1 conv on channels-last maps, written into ``out`` (a band
    of rows of a channels-last map): per image one GEMM on the (pixels, channels) views, accumulating
    into ``out`` after it took the residual (no fresh output buffer, no separate sum)."""
    if torch.is_autocast_enabled(x.device.type):  # lower-precision products: the module, then the sum
        y = conv(x)
        if residual is None:
            out.copy_(y)
        else:
            torch.add(residual, y, out=out)
        return
    weight_t = conv.weight.view(conv.out_channels, conv.in_channels).t()
    for i in range(x.shape[0]):
        src = x[i].permute(1, 2, 0).reshape(-1, conv.in_channels)
        dst = out[i].permute(1, 2, 0)  # (rows, W, C): contiguous for a band of full rows
        flat = dst.view(-1, conv.out_channels)
        if residual is None and conv.bias is None:
            torch.mm(src, weight_t, out=flat)
            continue
        if residual is None:
            flat.copy_(conv.bias.expand_as(flat))
        else:
            dst.copy_(residual[i].permute(1, 2, 0))
            if conv.bias is not None:
                flat.add_(conv.bias)
        flat.addmm_(src, weight_t)


class Attention(nn.Module):
    """MDTA: per head, a (C/h x C/h) attention between channels of cosine-normalised q and k, scaled
    by a learned per-head `temperature`; cost linear in the number of pixels.

    Returns `project_out`'s output tensor itself (so MAC scores of the two modules tie, as in the
    reference).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if _bands_allowed(self, x):
            return self._forward_bands(x)
        qkv = self.qkv_dwconv(self.qkv(x))
        d = c // self.num_heads
        if straightforward_path_enabled() or not _is_channels_last(qkv):
            # (B, 3C, H, W) -> three (B, heads, C/heads, H*W); channel index = head * C/heads + j. A view
            # in the channel-major layout (the GPU's), where a pixel-major split would copy.
            q, k, v = qkv.reshape(b, 3, self.num_heads, d, h * w).unbind(1)
            if straightforward_path_enabled():
                out = self._attend_literal(q, k, v)
            else:
                out = self._attention_weights(q, k, q.norm(dim=-1), k.norm(dim=-1)) @ v
            return self.project_out(out.reshape(b, c, h, w))
        # Same split, read through the pixel-major view (no copy when qkv is channels-last).
        tokens = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, self.num_heads, d)
        qk = tokens[:, :, :2]
        norms = (qk * qk).sum(dim=1).sqrt()  # (B, 2, heads, C/heads): |q_j| and |k_j| over pixels
        q, k, v = (t.permute(0, 2, 3, 1) for t in tokens.unbind(2))  # (B, heads, C/heads, HW)
        weights = self._attention_weights(q, k, norms[:, 0], norms[:, 1])
        # (weights v)^T = v^T weights^T comes out pixel-major, (B, heads, HW, C/heads): with one head
        # that already is the channels-last map, with more one copy makes it so.
        out = torch.matmul(v.transpose(-2, -1), weights.transpose(-2, -1)).transpose(1, 2)
        out = out.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.project_out(out.contiguous(memory_format=torch.channels_last))

    def _forward_bands(
        self, x: torch.Tensor, norm: nn.Module | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inference when no hook watches: MDTA (of ``norm(x)`` if given, plus ``residual`` if given)
        band by band. A first pass makes q, k, v per band of rows (with the depthwise conv's one-row
        halo), accumulating the (C/h x C/h) products q k^T and the squared norms and keeping only v; a
        second applies the attention and ``project_out`` per band. The 3C-channel maps never exist
        whole (75 MB each at 256x256 for 96 channels)."""
        b, c, h, w = x.shape
        heads = self.num_heads
        d = c // heads
        gram = x.new_zeros(b, heads, d, d)
        squares = x.new_zeros(b, 2, heads, d)
        v_all = x.new_empty(b, h, w, heads, d)  # pixel-major v
        bands = _bands(h, w)
        for r0, r1, lo, hi in bands:
            band = x[:, :, lo:hi] if norm is None else norm(x[:, :, lo:hi])
            qkv = self.qkv_dwconv(self.qkv(band))[:, :, r0 - lo : r1 - lo]
            tokens = qkv.permute(0, 2, 3, 1).reshape(b, (r1 - r0) * w, 3, heads, d)
            qk = tokens[:, :, :2]
            squares += (qk * qk).sum(dim=1)
            q, k = (t.permute(0, 2, 3, 1) for t in qk.unbind(2))  # (B, heads, C/heads, pixels)
            gram += q @ k.transpose(-2, -1)
            v_all[:, r0:r1] = tokens[:, :, 2].reshape(b, r1 - r0, w, heads, d)
        norms = squares.sqrt()
        weights_t = self._weights_from_gram(gram, norms[:, 0], norms[:, 1]).transpose(-2, -1)
        out = torch.empty((b, self.project_out.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        for r0, r1, _, _ in bands:
            v_t = v_all[:, r0:r1].reshape(b, -1, heads, d).transpose(1, 2)  # (B, heads, pixels, C/heads)
            o = torch.matmul(v_t, weights_t).transpose(1, 2).reshape(b, r1 - r0, w, c).permute(0, 3, 1, 2)
            _pointwise_into(self.project_out, o, out[:, :, r0:r1],
                            None if residual is None else residual[:, :, r0:r1])
        return out

    def _attend_literal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The paper's formula, step by step: normalise, q k^T * temperature, softmax, times v."""
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(_NORMALIZE_EPS)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(_NORMALIZE_EPS)
        logits = (q @ k.transpose(-2, -1)) * self.temperature
        weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights @ v

    def _attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor
    ) -> torch.Tensor:
        """softmax over the (C/h x C/h) cosine similarities times temperature, without materialising
        normalised q and k: the dot products of the raw vectors are divided by the outer product of their
        norms (clamped like F.normalize)."""
        return self._weights_from_gram(q @ k.transpose(-2, -1), q_norm, k_norm)

    def _weights_from_gram(
        self, gram: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor
    ) -> torch.Tensor:
        """softmax(q k^T / (|q| |k|^T) * temperature) from the raw products q k^T."""
        q_norm, k_norm = q_norm.clamp_min(_NORMALIZE_EPS), k_norm.clamp_min(_NORMALIZE_EPS)
        scale = self.temperature / (q_norm.unsqueeze(-1) * k_norm.unsqueeze(-2))
        return torch.softmax(gram * scale, dim=-1)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _bands_allowed(self, x):  # LayerNorm is per pixel: it runs band by band too
            x = self.attn._forward_bands(x, self.norm1, residual=x)
            return self.ffn._forward_bands(x, self.norm2, residual=x)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


# --------------------------------------------------------------------------------------------------
# Embedding, resampling and prompts


class OverlapPatchEmbed(nn.Module):
    """3x3 conv from image channels to `dim` features."""

    def __init__(self, in_channels: int, embed_dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv to C/2, then pixel-unshuffle by 2."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv to 2C, then pixel-shuffle by 2."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PromptGenBlock(nn.Module):
    """Prompt generation (PromptIR Eq. 1): weights = softmax(Linear(global average of the features))
    over `prompt_len` learned prompts; their weighted sum is resized bilinearly to the feature map and
    passed through a 3x3 conv. Returns `conv3x3`'s output tensor itself."""

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, L)
        prompts = self.prompt_param[0]  # (L, C, S, S)
        if straightforward_path_enabled():
            prompt = (weights[:, :, None, None, None] * prompts.expand(b, *prompts.shape)).sum(dim=1)
        else:
            prompt = torch.einsum("bl,lcxy->bcxy", weights, prompts)
        prompt = F.interpolate(prompt, (h, w), mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


# --------------------------------------------------------------------------------------------------
# The network


def _reflect_pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right up to a multiple (the reference's padding). For images smaller than
    the pad, reflect in several steps (a 1-pixel side is replicated) instead of failing."""
    while True:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        if pad_h == 0 and pad_w == 0:
            return x
        if min(h, w) == 1:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, min(pad_w, w - 1), 0, min(pad_h, h - 1)), mode="reflect")


def _blocks(n: int, dim: int, heads: int, ffn: float, bias: bool, ln: str) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn, bias, ln) for _ in range(n)])


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """The fast path runs float32 channels-last on CPU: depthwise 3x3 convs (oneDNN) are several
    times faster there and the LayerNorm token view needs no copy; float64 has no oneDNN kernels
    and is slower in that layout. Values do not depend on the layout. (Shared by the Restormers.)"""
    if x.device.type == "cpu" and x.dtype == torch.float32 and not straightforward_path_enabled():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def run_blocks(module: nn.Module, x: torch.Tensor, *, recompute: bool) -> torch.Tensor:
    """Apply a block or a sequence of blocks; with ``recompute`` (activation checkpointing, training
    with gradients) each block's activations are recomputed in backward instead of kept."""
    if not (recompute and torch.is_grad_enabled()):
        return module(x)
    for block in module if isinstance(module, nn.Sequential) else [module]:
        x = checkpoint(block, x, use_reentrant=False)
    return x


def add_encoder(
    net: nn.Module, dim: int, num_blocks: Sequence[int], heads: Sequence[int], ffn: float, bias: bool,
    ln: str,
) -> None:
    """Register the Restormer encoder shared by PromptIR and the RAM++ Restormers on ``net``: levels 1-3
    with their down-samplings, then the latent (channels dim, 2, 4 and 8 dim), in the reference's
    parameter order. ``net`` registers its ``patch_embed`` (and PromptIR its prompts) first."""
    c1, c2, c3, c4 = dim, dim * 2, dim * 4, dim * 8
    net.encoder_level1 = _blocks(num_blocks[0], c1, heads[0], ffn, bias, ln)
    net.down1_2 = Downsample(c1)
    net.encoder_level2 = _blocks(num_blocks[1], c2, heads[1], ffn, bias, ln)
    net.down2_3 = Downsample(c2)
    net.encoder_level3 = _blocks(num_blocks[2], c3, heads[2], ffn, bias, ln)
    net.down3_4 = Downsample(c3)
    net.latent = _blocks(num_blocks[3], c4, heads[3], ffn, bias, ln)


def encode(
    net: nn.Module, inp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder of :func:`add_encoder` on a padded input: (level 1, level 2, level 3, latent) maps,
    the first three kept for the decoder's skip connections."""
    enc1 = net._run(net.encoder_level1, net.patch_embed(inp))
    enc2 = net._run(net.encoder_level2, net.down1_2(enc1))
    enc3 = net._run(net.encoder_level3, net.down2_3(enc2))
    return enc1, enc2, enc3, net._run(net.latent, net.down3_4(enc3))


class PromptIR(nn.Module):
    """PromptIR as used by RAM-PromptIR (35,376,967 parameters with the defaults).

    Args:
        inp_channels, out_channels: image channels (3).
        dim: features at full resolution. Must be 48: the reference hard-codes channel counts that
            only fit 48 (checkpoints and RAM's layer rankings assume it).
        num_blocks: transformer blocks at levels 1-4 (encoder and decoder share the counts of 1-3).
        num_refinement_blocks: blocks after the decoder, at full resolution.
        heads: attention heads at levels 1-4; the prompt-fusion blocks use heads[2].
        ffn_expansion_factor: GDFN hidden width = int(channels * factor).
        bias: biases of the convolutions (not of the prompt Linear, which always has one).
        LayerNorm_type: "WithBias" (PromptIR) or "BiasFree".
        decoder: True builds the prompt blocks. False builds none and also no prompt-fusion blocks
            (`noise_level*`); the `reduce_noise_level*` 1x1 convs then adapt the plain features. (By
            its channel counts the reference's decoder=False cannot run: its latent keeps 8*dim
            channels where `up4_3` expects 4*dim.)
        finetune_type: accepted for reference configs; ignored.
        img_size: accepted for reference configs; unused (it sized the reference's unused mask token).
        prompt_dims, prompt_len, prompt_sizes: channels, count and (square) size of the learned
            prompts of `prompt1`, `prompt2`, `prompt3`, which are fused with the decoder features of
            level 2, level 3 and the latent respectively.
        use_checkpoint: recompute transformer blocks in the backward pass (training big crops).
    """

    size_multiple = PAD_MULTIPLE  # the input is padded to it inside forward

    def __init__(
        self,
        *,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # the reference's keyword
        decoder: bool = True,
        finetune_type: str | None = None,
        img_size: int = 128,
        prompt_dims: Sequence[int] = (64, 128, 320),
        prompt_len: int = 5,
        prompt_sizes: Sequence[int] = (64, 32, 16),
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        _validate(dim, num_blocks, heads, LayerNorm_type, decoder, prompt_dims, prompt_len, prompt_sizes,
                  num_refinement_blocks)
        del finetune_type, img_size  # reference-compatibility only
        self.decoder = decoder
        self.use_checkpoint = use_checkpoint
        ffn, ln = ffn_expansion_factor, LayerNorm_type
        c2, c3, c4 = dim * 2, dim * 4, dim * 8  # channels of levels 2-4 (level 1: dim)
        p1, p2, p3 = prompt_dims

        # Registration order = the reference's parameter order (checkpoints, MAC layer indices).
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim, bias)
        if decoder:
            # promptN is computed from the features it is fused with: level 2, 3 and the latent.
            self.prompt1 = PromptGenBlock(p1, prompt_len, prompt_sizes[0], lin_dim=c2)
            self.prompt2 = PromptGenBlock(p2, prompt_len, prompt_sizes[1], lin_dim=c3)
            self.prompt3 = PromptGenBlock(p3, prompt_len, prompt_sizes[2], lin_dim=c4)

        add_encoder(self, dim, num_blocks, heads, ffn, bias, ln)

        # PromptIR's decoder reduces the fused latent to c3 before up-sampling, so up4_3 yields c2
        # channels (Restormer's yields c3): the skip concatenation has c2 + c3 channels.
        self.up4_3 = Upsample(c3)
        self.reduce_chan_level3 = nn.Conv2d(c2 + c3, c3, kernel_size=1, bias=bias)
        if decoder:
            self.noise_level3 = TransformerBlock(c4 + p3, heads[2], ffn, bias, ln)
        self.reduce_noise_level3 = nn.Conv2d(c4 + (p3 if decoder else 0), c3, kernel_size=1, bias=bias)
        self.decoder_level3 = _blocks(num_blocks[2], c3, heads[2], ffn, bias, ln)

        self.up3_2 = Upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(c3, c2, kernel_size=1, bias=bias)
        if decoder:
            self.noise_level2 = TransformerBlock(c3 + p2, heads[2], ffn, bias, ln)
        self.reduce_noise_level2 = nn.Conv2d(c3 + (p2 if decoder else 0), c3, kernel_size=1, bias=bias)
        self.decoder_level2 = _blocks(num_blocks[1], c2, heads[1], ffn, bias, ln)

        self.up2_1 = Upsample(c2)
        if decoder:
            self.noise_level1 = TransformerBlock(c2 + p1, heads[2], ffn, bias, ln)
        self.reduce_noise_level1 = nn.Conv2d(c2 + (p1 if decoder else 0), c2, kernel_size=1, bias=bias)
        self.decoder_level1 = _blocks(num_blocks[0], c2, heads[0], ffn, bias, ln)

        self.refinement = _blocks(num_refinement_blocks, c2, heads[0], ffn, bias, ln)
        self.output = nn.Conv2d(c2, out_channels, kernel_size=3, padding=1, bias=bias)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(module, x, recompute=self.use_checkpoint and self.training)

    def _fuse_prompt(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Prompt interaction: concatenate the generated prompt, one transformer block, 1x1 conv."""
        if self.decoder:
            prompt = getattr(self, f"prompt{level}")(x)
            x = self._run(getattr(self, f"noise_level{level}"), self._layout(torch.cat([x, prompt], dim=1)))
        return getattr(self, f"reduce_noise_level{level}")(x)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return fast_layout(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised (B, C, H, W) -> restored, same space and size."""
        h, w = x.shape[-2:]
        inp = self._layout(_reflect_pad_to_multiple(x, PAD_MULTIPLE))

        enc1, enc2, enc3, latent = encode(self, inp)

        dec3 = self.up4_3(self._fuse_prompt(3, latent))
        dec3 = self.reduce_chan_level3(self._layout(torch.cat([dec3, enc3], dim=1)))
        dec3 = self._run(self.decoder_level3, dec3)

        dec2 = self.up3_2(self._fuse_prompt(2, dec3))
        dec2 = self.reduce_chan_level2(self._layout(torch.cat([dec2, enc2], dim=1)))
        dec2 = self._run(self.decoder_level2, dec2)

        dec1 = self.up2_1(self._fuse_prompt(1, dec2))
        dec1 = self._run(self.decoder_level1, self._layout(torch.cat([dec1, enc1], dim=1)))
        dec1 = self._run(self.refinement, dec1)

        out = self.output(dec1) + inp  # global residual on the padded input
        return out[..., :h, :w].contiguous()


def _validate(
    dim: int,
    num_blocks: Sequence[int],
    heads: Sequence[int],
    layer_norm_type: str,
    decoder: bool,
    prompt_dims: Sequence[int],
    prompt_len: int,
    prompt_sizes: Sequence[int],
    num_refinement_blocks: int,
) -> None:
    """Fail at construction with one clear line rather than with a shape error deep in forward."""

    def bad(msg: str) -> PromptIRConfigError:
        return PromptIRConfigError(f"PromptIR: {msg}")

    if dim != 48:
        raise bad(f"dim must be 48 (the reference hard-codes channel counts for it), got {dim}")
    if len(num_blocks) != 4 or len(heads) != 4:
        raise bad(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
    if any(n < 1 for n in num_blocks) or num_refinement_blocks < 0:
        raise bad(f"num_blocks must be >= 1 and num_refinement_blocks >= 0, got {list(num_blocks)}, "
                  f"{num_refinement_blocks}")
    if layer_norm_type not in ("WithBias", "BiasFree"):
        raise bad(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}")
    if len(prompt_dims) != 3 or len(prompt_sizes) != 3 or prompt_len < 1 or min(prompt_sizes) < 1:
        raise bad("prompt_dims and prompt_sizes need 3 entries, prompt_len and sizes must be >= 1")
    level_channels = [dim, dim * 2, dim * 4, dim * 8]
    for level, (c, n_heads) in enumerate(zip(level_channels, heads), start=1):
        if n_heads < 1 or c % n_heads:
            raise bad(f"level {level} has {c} channels, not divisible by {n_heads} heads")
    fusion_channels = (dim * 2 + prompt_dims[0], dim * 4 + prompt_dims[1], dim * 8 + prompt_dims[2])
    for c in fusion_channels if decoder else ():
        if c % heads[2]:
            raise bad(f"prompt fusion block of {c} channels is not divisible by heads[2]={heads[2]}")


# ------------------------------------------------------------------------------------- descriptor
# constructor defaults of the Restormer U-Net that PromptIR, RAM-Restormer and RFR share
BACKBONE_DEFAULTS: dict = dict(
    inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
)
_DEFAULTS: dict = dict(BACKBONE_DEFAULTS, prompt_dims=[64, 128, 320], prompt_len=5, prompt_sizes=[64, 32, 16])
_LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
# Convs the original PromptIR constructs but never uses in forward; RAM's PromptIR (and ours) omits them.
UNUSED_KEYS = re.compile(r"^(chnl_reduce[123]|reduce_noise_channel_[123])\.(weight|bias)$")


def looks_like_restormer_family(sd: StateDict) -> bool:
    """Restormer's U-Net keys, which PromptIR, RAM-Restormer and RFR share."""
    return "patch_embed.proj.weight" in sd and any(k.startswith("encoder_level1.") for k in sd)


def read_restormer_backbone(sd: StateDict, arch: str) -> dict:
    """The arguments of the shared Restormer U-Net, read from shapes (every one, defaults included)."""
    dim, inp = shape(sd, "patch_embed.proj.weight", arch)[:2]
    pairs = sorted({tuple(v.shape[:2]) for k, v in sd.items() if k.endswith(".ffn.project_out.weight")})
    if not pairs:
        raise CheckpointError(f"looks like {arch} but has no '*.ffn.project_out.weight'")
    return dict(
        inp_channels=inp, out_channels=shape(sd, "output.weight", arch)[0], dim=dim,
        num_blocks=[len(indices(sd, rf"^{name}\.(\d+)\.", arch)) for name in _LEVELS],
        num_refinement_blocks=len(indices(sd, r"^refinement\.(\d+)\.", arch)),
        heads=[shape(sd, f"{name}.0.attn.temperature", arch)[0] for name in _LEVELS],
        ffn_expansion_factor=expansion_factor(pairs), bias="encoder_level1.0.attn.qkv.bias" in sd,
        LayerNorm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
    )


def _detect(sd: StateDict) -> dict:
    found = read_restormer_backbone(sd, "PromptIR")
    decoder = "prompt1.prompt_param" in sd
    if decoder:  # prompt_param: (1, prompt_len, prompt_dim, size, size)
        shapes = [shape(sd, f"prompt{i}.prompt_param", "PromptIR") for i in (1, 2, 3)]
        found.update(prompt_dims=[s[2] for s in shapes], prompt_len=shapes[0][1],
                     prompt_sizes=[s[3] for s in shapes])
    return {"decoder": decoder, **differing(found, _DEFAULTS)}


def _bytes_per_pixel(kw: dict) -> int:
    """The widest full-resolution stage (decoder level 1 at 2 x dim channels, a gated FFN of
    2 x 2.66 x that) plus skip tensors."""
    return int(4 * int(kw.get("dim", 48)) * 40 * 1.5)


# what the descriptors of the Restormer family (PromptIR, RAM-Restormer, RFR) share: padding, memory
# estimate and the blocks worth recomputing
RESTORMER_FAMILY: dict = dict(
    size_multiple=lambda kw: PAD_MULTIPLE, bytes_per_pixel=_bytes_per_pixel,
    checkpoint_blocks=(TransformerBlock,),
)

ARCHITECTURE = Architecture(
    name="promptir", display_name="PromptIR", network=PromptIR, **RESTORMER_FAMILY,
    looks_like=looks_like_restormer_family, detect=_detect,
    expected_keys=("patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "prompt1.prompt_param"),
    unused_keys=UNUSED_KEYS,
    unused_keys_reason="of the original PromptIR's unused convs (defined but never called in its forward)",
)
