"""RAM-SwinIR: SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021) in
the variant used by RAM (Qin et al., "Restore Anything with Masks", ECCV 2024; RAM_SPEC §6).

What RAM changes compared with the original SwinIR (so original SwinIR checkpoints do not load):

* ``conv_first`` is a 1x1 convolution and the input is not mean-subtracted;
* the long skip uses the *post-LayerNorm* shallow features:
  ``t = LayerNorm(patch_embed(conv_first(x)))``, ``out = conv_last(conv_after_body(norm(RSTBs(t))) + t)``;
* no global image residual, no upsampler (restoration at the input's resolution);
* a ``mask_token`` parameter of shape (1, 3, img_size, img_size) exists only so that reference checkpoints
  load; ``forward`` never uses it (masking happens outside the network, see :mod:`ramir.masking`).

Parameter and buffer names, shapes and the ``state_dict`` order are those of the reference, and so is the
layout of every module output that MAC hooks (attention layers in window layout ``(nW*B, N, C)``, odd
blocks in the cyclically shifted frame). Input and output are ImageNet-normalised NCHW tensors; the input
is reflect-padded bottom/right to a multiple of the window size and the output cropped back.

Two execution paths give the same numbers: the fast one (roll + window partition as one cached token
gather, one ``scaled_dot_product_attention`` call per block with the position bias, the few shift-masked
windows redone with bias + mask, cached masks; residual sums in place), and a straightforward literal one
(per-window Python loops, explicit softmax) enabled by :func:`ramir.archs.common.straightforward_path`,
kept only for benchmarks and tests. At CPU inference (no autograd) a block that no hook observes runs on
rectangles of windows (``CHUNK_TOKENS`` tokens): every operation is per token or per window, so the
numbers are the same, and the intermediates stay in cache instead of being fresh 50-150 MB buffers (page
faults and memory traffic dominated large inputs). There the biases are folded by exact identities (the
key bias dropped, the value bias moved into ``proj``'s) and both residual sums are accumulated by the
GEMMs (:meth:`WindowAttention.add_to_`, :meth:`Mlp.add_to_`). Hooks always see whole tensors.

Written for ramir from the papers and the reference's documented behaviour.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import checkpoint as activation_checkpoint

from ramir.archs.common import observed as _observed
from ramir.archs.common import straightforward_path_enabled
from ramir.archs.descriptor import Architecture, StateDict, indices, ratio, shape
from ramir.errors import CheckpointError

# Additive attention mask value for token pairs from different regions of a shifted window (reference).
SHIFT_MASK_VALUE = -100.0


# ----------------------------------------------------------------------------------------------------
# Pure helpers: window partition, relative positions, shifted-window masks
# ----------------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, window*window, C); windows ordered batch-major, then row, then column."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nW, window*window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def window_partition_literal(x: torch.Tensor, window: int) -> list[torch.Tensor]:
    """The same windows as :func:`window_partition`, cut one by one (straightforward path)."""
    b, h, w, c = x.shape
    return [
        x[i, r : r + window, s : s + window, :].reshape(window * window, c)
        for i in range(b)
        for r in range(0, h, window)
        for s in range(0, w, window)
    ]


def window_merge_literal(windows: Sequence[torch.Tensor], window: int, h: int, w: int) -> torch.Tensor:
    """Paste windows back one by one (straightforward path)."""
    c = windows[0].shape[-1]
    per_row, per_image = w // window, (h // window) * (w // window)
    images = []
    for i in range(len(windows) // per_image):
        rows = []
        for r in range(h // window):
            start = i * per_image + r * per_row
            row = windows[start : start + per_row]
            rows.append(torch.cat([win.reshape(window, window, c) for win in row], 1))
        images.append(torch.cat(rows, 0))
    return torch.stack(images)


def relative_position_index(window_h: int, window_w: int) -> torch.Tensor:
    """(N, N) int64 index into the relative-position bias table, N = window_h*window_w.

    Query (i1, j1) and key (i2, j2) share the entry ``(i1-i2+Wh-1) * (2*Ww-1) + (j1-j2+Ww-1)``: one learned
    bias per relative offset (Swin Transformer, Liu et al. 2021, Eq. 4).
    """
    rows = torch.arange(window_h).repeat_interleave(window_w)  # row of each flattened position
    cols = torch.arange(window_w).repeat(window_h)
    d_row = rows[:, None] - rows[None, :] + window_h - 1
    d_col = cols[:, None] - cols[None, :] + window_w - 1
    return d_row * (2 * window_w - 1) + d_col


def shifted_window_mask(
    h: int,
    w: int,
    window: int,
    shift: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(nW, N, N) additive mask for cyclically shifted windows: 0 within a region, -100 across regions.

    After rolling by ``-shift`` a border window holds pixels from up to 4 non-adjacent image regions; the
    image is cut into 3x3 regions (bands ``[0, H-window)``, ``[H-window, H-shift)``, ``[H-shift, H)`` in
    each direction) and attention between different regions is suppressed.
    """

    def bands(n: int) -> torch.Tensor:
        band = torch.zeros(n, dtype=torch.long)
        band[n - window :] = 1
        band[n - shift :] = 2
        return band

    region = bands(h)[:, None] * 3 + bands(w)[None, :]  # (H, W) region label
    labels = window_partition(region[None, :, :, None], window).squeeze(-1)  # (nW, N)
    differ = labels[:, :, None] != labels[:, None, :]
    mask = torch.zeros(differ.shape, dtype=dtype)
    mask.masked_fill_(differ, SHIFT_MASK_VALUE)
    return mask.to(device) if device is not None else mask


def mixed_windows(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Indices of the windows whose shift mask is not all zero: the last window row and column.

    Only windows straddling the wrap-around of the cyclic shift mix regions; interior windows attend
    with the position bias alone, which lets the fast path skip the mask for them (same numbers).
    """
    rows, cols = h // window, w // window
    index = torch.arange(rows * cols).view(rows, cols)
    if shift == 0:
        return index.new_empty(0)
    return torch.cat([index[:-1, -1], index[-1, :]])


@functools.lru_cache(maxsize=16)
def _cached_shift_mask(
    h: int, w: int, window: int, shift: int, device: torch.device, dtype: torch.dtype, inference: bool
) -> torch.Tensor:
    # ``inference`` is part of the key: tensors made under inference_mode cannot enter autograd later.
    del inference
    return shifted_window_mask(h, w, window, shift, device, dtype)


@functools.lru_cache(maxsize=32)
def _cached_mixed_windows(
    h: int, w: int, window: int, shift: int, device: torch.device, inference: bool
) -> torch.Tensor:
    del inference  # part of the key only (see _cached_shift_mask)
    return mixed_windows(h, w, window, shift).to(device)


def _window_rectangles(rows: int, cols: int, per: int) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(r0, r1, c0, c1)`` of windows that tile a rows x cols grid, each of at most ``per``
    windows: near-equal pieces of one window row when a row holds more, else whole rows together."""
    if rows <= 0 or cols <= 0:
        return []
    if cols >= per:
        pieces = -(-cols // per)
        bounds = [i * cols // pieces for i in range(pieces + 1)]
        return [(r, r + 1, bounds[i], bounds[i + 1]) for r in range(rows) for i in range(pieces)]
    step = max(1, per // cols)
    return [(r, min(r + step, rows), 0, cols) for r in range(0, rows, step)]


def window_order(h: int, w: int, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token permutations between image order and (cyclically shifted) window order, for (H*W,) maps.

    ``forward[j]`` is the image position of the j-th token of :func:`window_partition` applied to the map
    rolled by ``-shift``; ``inverse`` undoes it. One ``index_select`` with them replaces roll + partition
    (and merge + roll back), i.e. one copy instead of three per direction.
    """
    pos = torch.arange(h * w).view(1, h, w, 1)
    if shift:
        pos = torch.roll(pos, shifts=(-shift, -shift), dims=(1, 2))
    forward = window_partition(pos, window).reshape(-1)
    inverse = torch.empty_like(forward)
    inverse[forward] = torch.arange(h * w)
    return forward, inverse


@functools.lru_cache(maxsize=32)
def _cached_window_order(
    h: int, w: int, window: int, shift: int, device: torch.device, inference: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    del inference  # part of the key only (see _cached_shift_mask)
    return tuple(t.to(device) for t in window_order(h, w, window, shift))


# Tokens per chunk when a block may run its modules piecewise (see SwinTransformerBlock._forward_chunked):
# 16 windows of 8x8, ~0.7 MB of 180-wide features, so that every intermediate stays in cache.
CHUNK_TOKENS = 1024


def _add_to_output(output: torch.Tensor, residual: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """``output + residual``, written into ``output`` when only this forward can see it: the fresh result
    of a convolution, without autograd, hooks or tracing. A map-sized new buffer costs about as much in
    page faults as the sum itself (large buffers come straight from the OS and are returned after use)."""
    last = producer[-1] if isinstance(producer, nn.Sequential) and len(producer) else producer
    if (isinstance(last, nn.Conv2d) and not torch.is_grad_enabled() and _caching_allowed()
            and not straightforward_path_enabled() and not _observed(producer)):
        return output.add_(residual)
    return output + residual


def _batch_rows(index: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """Token indices of every image of a batch, as rows of the (B*L, C) view."""
    if batch == 1:
        return index
    return (index + length * torch.arange(batch, device=index.device)[:, None]).reshape(-1)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(1, index)`` for (B, L, C) tokens, as a row gather of the 2-D view (CPU's dim-0
    index_select copies whole rows; along dim 1 it is several times slower)."""
    b, length, c = x.shape
    return x.reshape(-1, c).index_select(0, _batch_rows(index, b, length)).view(b, -1, c)


def _caching_allowed() -> bool:
    """Caches hold concrete tensors; tracing/compiling must see the computation instead."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def tokens_to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W) (the reference's PatchUnEmbed), as a view in channels_last layout.

    The reference's ``transpose(1, 2).view(...)`` gives the same view except for the batch stride, which
    for B = 1 comes out as C: PyTorch then no longer recognises the layout as channels_last, copies the
    map to NCHW before every convolution and returns an NCHW output (at 512x512 on one CPU thread each
    3x3 conv plus its residual sum takes ~1.6x as long). The straightforward path keeps the literal form.
    """
    b, _, c = x.shape
    if straightforward_path_enabled() or not x.is_contiguous():  # (a transposed NCHW map: view it back)
        return x.transpose(1, 2).reshape(b, c, size[0], size[1])
    return x.view(b, size[0], size[1], c).permute(0, 3, 1, 2)


def image_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) (the reference's PatchEmbed without norm)."""
    return x.flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample while training, rescaled by 1/keep."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Transformer feed-forward: fc1 -> GELU -> fc2 (names as in the reference)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def add_to_(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual += self(x)`` in place for inference that no hook observes: ``fc1``'s bias and the
        GELU are applied in place on the GEMM's output, ``fc2``'s bias goes into the residual and the GEMM
        accumulates into it (no bias copies, no fresh buffer for the activation, no separate sum)."""
        if torch.is_autocast_enabled(x.device.type):  # lower-precision products: the plain modules
            return residual.add_(self(x))
        hidden = torch.mm(x.reshape(-1, x.shape[-1]), self.fc1.weight.t())
        if self.fc1.bias is not None:
            hidden.add_(self.fc1.bias)
        if isinstance(self.act, nn.GELU):
            hidden = torch.ops.aten.gelu_(hidden, approximate=self.act.approximate)
        else:
            hidden = self.act(hidden)
        flat = residual.view(-1, residual.shape[-1])
        if self.fc2.bias is not None:
            flat.add_(self.fc2.bias)
        flat.addmm_(hidden.reshape(-1, hidden.shape[-1]), self.fc2.weight.t())
        return residual


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    Input and output are in window layout (nW*B, N, C). Returns the ``proj`` output tensor itself (no
    extra op after it in eval), as the reference does, so MAC gives this module and ``proj`` equal scores.
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(wh, ww))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None
        self._folded_cache: tuple[tuple, tuple] | None = None

    # -- relative position bias -------------------------------------------------------------------

    def _gather_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        table = self.relative_position_bias_table
        return table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()

    def position_bias(self) -> torch.Tensor:
        """(num_heads, N, N) bias gathered from the table.

        Cached while the table cannot receive gradients (eval / no_grad); recomputed whenever it can (the
        table is learned) or has changed: the key holds the tensors' storage, dtype, device and version
        counter, which in-place updates (optimiser steps, ``load_state_dict``) increment.
        """
        table, index = self.relative_position_bias_table, self.relative_position_index
        if (torch.is_grad_enabled() and table.requires_grad) or not _caching_allowed():
            return self._gather_bias()
        key = (
            table.device, table.dtype, table.data_ptr(), table._version,
            index.data_ptr(), index._version, torch.is_inference_mode_enabled(),
        )
        if self._bias_cache is None or self._bias_cache[0] != key:
            with torch.no_grad():
                self._bias_cache = (key, self._gather_bias())
        return self._bias_cache[1]

    # -- forward --------------------------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, mask_windows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (nW*B, N, C) windows; mask: (nW, N, N) additive shift mask or None.

        ``mask_windows`` lists the windows where ``mask`` is not all zero (derived from ``mask`` if not
        given). All windows attend with the position bias only; those few are then redone with bias + mask,
        which is exact (the others' mask is zero) and avoids materialising a (nW, heads, N, N) mask.
        """
        if straightforward_path_enabled():
            return self._forward_straightforward(x, mask)
        q, k, v = self._split_heads(self.qkv(x))
        return self._project(self._windowed_attention(q, k, v, mask, mask_windows))

    def add_to_(
        self, residual: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``residual += self(x, mask)`` in place, with the same numbers up to rounding, for inference that
        no hook observes (it bypasses the ``qkv`` and ``proj`` modules). ``mask`` (nW, N, N) is applied to
        every window (dense), as for the windows a shift wraps around.

        Three exact identities save whole passes over the activations (the bias copies and the separate
        residual sum cost ~10 % of a block on the CPU):

        * the key bias adds ``q . b_k`` to every score of a query row, which softmax ignores: dropped;
        * attention weights sum to 1, so the value bias comes out unchanged and goes through ``proj``:
          it is folded into ``proj``'s bias (``b_p + W_p b_v``);
        * ``proj``'s bias is added to the residual and the projection accumulated into it by the GEMM.
        """
        if torch.is_autocast_enabled(x.device.type):  # lower-precision products: the plain modules
            return residual.add_(self(x, mask))
        b_, n, c = x.shape
        q_bias, proj_bias = self._folded_biases()
        qkv = torch.mm(x.reshape(-1, c), self.qkv.weight.t())
        if q_bias is not None:
            qkv[:, :c].add_(q_bias)
        q, k, v = self._split_heads(qkv.view(b_, n, 3 * c))
        out = self._windowed_attention(q, k, v, mask, None, dense=True)
        flat = residual.view(-1, c)
        if proj_bias is not None:
            flat.add_(proj_bias)
        flat.addmm_(out.reshape(-1, c), self.proj.weight.t())
        return residual

    def _folded_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(query bias, proj bias + W_proj @ value bias) for :meth:`add_to_`, cached like the position
        bias (the key follows the parameters' storage and version counters)."""
        params = (self.qkv.weight, self.qkv.bias, self.proj.weight, self.proj.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) if p is not None else None for p in params)
        key += (torch.is_inference_mode_enabled(),)
        if self._folded_cache is None or self._folded_cache[0] != key:
            c = self.dim
            with torch.no_grad():
                qkv_bias, proj_bias = self.qkv.bias, self.proj.bias
                if qkv_bias is None:
                    folded = (None, None if proj_bias is None else proj_bias.clone())
                else:
                    through = self.proj.weight @ qkv_bias[2 * c :]
                    folded = (qkv_bias[:c].clone(), through if proj_bias is None else through + proj_bias)
            self._folded_cache = (key, folded)
        return self._folded_cache[1]

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(nW*B, N, 3C) -> q, k, v as (nW*B, heads, N, C/heads) views."""
        b_, n, c3 = qkv.shape
        heads = self.num_heads
        parts = qkv.reshape(b_, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)
        return parts[0], parts[1], parts[2]

    def _windowed_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
        mask_windows: torch.Tensor | None, dense: bool = False,
    ) -> torch.Tensor:
        """softmax(q k^T * scale + bias [+ mask]) v per window and head, back to (nW*B, N, C).

        With a mask, all windows attend with the bias alone and the few listed in ``mask_windows`` (the
        mask's non-zero ones) are redone with bias + mask; ``dense`` applies bias + mask to every window.
        """
        b_, heads, n, hd = q.shape
        c = heads * hd
        bias = self.position_bias().unsqueeze(0).to(q.dtype)  # 4-D keeps SDPA on its fused CPU kernel
        if mask is not None and not _caching_allowed():
            # Tracing / torch.compile: always dense, since the window list below has a data-dependent
            # size (a graph break per shifted block). (B, nW, heads, N, hd) against the (nW, heads, N, N)
            # bias + mask: the mask broadcasts over the batch, nothing is repeated.
            nw = mask.shape[0]
            full = bias + mask.unsqueeze(1).to(q.dtype)
            split = (b_ // nw, nw, heads, n, hd)
            out = self._attend(q.reshape(split), k.reshape(split), v.reshape(split), full)
            return out.reshape(b_, heads, n, hd).transpose(1, 2).reshape(b_, n, c)
        if mask is not None and dense:
            # 4-D inputs keep SDPA on its fused CPU kernel (5-D ones take the slow reference path)
            full = (bias + mask.unsqueeze(1).to(q.dtype)).repeat(b_ // mask.shape[0], 1, 1, 1)
            return self._attend(q, k, v, full).transpose(1, 2).reshape(b_, n, c)
        out = self._attend(q, k, v, bias).transpose(1, 2).reshape(b_, n, c)
        if mask is not None:
            nw = mask.shape[0]
            if mask_windows is None:
                mask_windows = mask.flatten(1).ne(0).any(1).nonzero().squeeze(1)
            if mask_windows.numel():
                images = b_ // nw
                rows = (mask_windows + nw * torch.arange(images, device=q.device)[:, None]).reshape(-1)
                window_mask = (bias + mask[mask_windows].unsqueeze(1).to(q.dtype)).repeat(images, 1, 1, 1)
                redone = self._attend(q[rows], k[rows], v[rows], window_mask)
                redone = redone.transpose(1, 2).reshape(-1, n, c)
                # out may alias SDPA's output, which autograd saves: write in place only without autograd
                if torch.is_grad_enabled():
                    out = out.index_copy(0, rows, redone)
                else:
                    out.index_copy_(0, rows, redone)
        return out

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        drop = self.attn_drop.p if self.training else 0.0
        if not _caching_allowed() and not self.training:
            # Tracing/exporting: the softmax written out. The fused kernel's output has (B, N, heads, hd)
            # strides, which the trace bakes into a view that the ONNX exporter's own SDPA decomposition
            # (with ordinary strides) cannot take: dynamic-size export failed on it.
            attn = (q * self.scale) @ k.transpose(-2, -1) + attn_mask
            return attn.softmax(dim=-1) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, scale=self.scale)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.training and self.proj_drop.p > 0:
            x = self.proj_drop(x)
        return x

    def _forward_straightforward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T * scale + bias + mask) v, literally, one window at a time."""
        b_, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b_, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        bias = self._gather_bias()
        outs = []
        for i in range(b_):
            scores = q[i] @ k[i].transpose(-2, -1) + bias  # (heads, N, N)
            if mask is not None:
                scores = scores + mask[i % mask.shape[0]]
            weights = self.attn_drop(torch.softmax(scores, dim=-1))
            outs.append((weights @ v[i]).transpose(0, 1).reshape(n, c))
        return self._project(torch.stack(outs))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """LayerNorm -> (shifted) window attention -> residual; LayerNorm -> MLP -> residual.

    Odd blocks of a group shift the windows by half a window (``shift_size``). The shift mask for
    ``input_resolution`` is the buffer ``attn_mask`` (as in the reference); other sizes get a cached one.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        if min(input_resolution) <= window_size:  # the reference's rule: one window covers everything
            shift_size, window_size = 0, min(input_resolution)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, (window_size, window_size), num_heads, qkv_bias, qk_scale, attn_drop,
                                    drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        if shift_size > 0:
            self.register_buffer("attn_mask", shifted_window_mask(*input_resolution, window_size, shift_size))
        else:
            self.attn_mask = None

    def shift_mask(
        self, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (nW, N, N) mask for an (h, w) map and the windows it is non-zero in (:func:`mixed_windows`:
        the last window row and column; None where nothing may be cached); (None, None) if unshifted."""
        if self.shift_size == 0:
            return None, None
        ws, s = self.window_size, self.shift_size
        if not _caching_allowed():
            # tracing / compiling: no cache lookups, and no choice by size either: comparing a symbolic
            # size with ``input_resolution`` would pin an exported graph to that one size
            return shifted_window_mask(h, w, ws, s, device, dtype), None
        stored = (h, w) == tuple(self.input_resolution) and self.attn_mask is not None
        if straightforward_path_enabled() and not stored:
            return shifted_window_mask(h, w, ws, s, device, dtype), None
        device, inference = torch.device(device), torch.is_inference_mode_enabled()
        mask = self.attn_mask if stored else _cached_shift_mask(h, w, ws, s, device, dtype, inference)
        return mask, _cached_mixed_windows(h, w, ws, s, device, inference)

    def runs_in_pieces(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` takes the piecewise inference path for ``x`` (CPU only: a GPU wants the
        big batched kernels; never under autograd, tracing, the straightforward path or a hook)."""
        return x.device.type == "cpu" and not (
            self.training or torch.is_grad_enabled() or straightforward_path_enabled()
            or not _caching_allowed() or _observed(self))

    def forward(
        self, x: torch.Tensor, x_size: tuple[int, int], overwrite_input: bool = False
    ) -> torch.Tensor:
        """x: (B, H*W, C) tokens of an (H, W) map. ``overwrite_input`` lets the piecewise path write its
        result into ``x`` (the caller owns ``x`` and needs it no more; saves a fresh map-sized buffer,
        whose page faults cost as much as copying it); ignored by the other paths."""
        h, w = x_size
        b, length, c = x.shape
        if length != h * w or h % self.window_size or w % self.window_size:
            raise ValueError(
                f"{length} tokens do not form a {h}x{w} map divisible by window {self.window_size}"
            )
        s, ws = self.shift_size, self.window_size
        mask, mask_windows = self.shift_mask(h, w, x.device, x.dtype)
        if self.runs_in_pieces(x):
            return self._forward_chunked(x, h, w, mask, mask_windows, out=x if overwrite_input else None)
        shortcut = x
        x = self.norm1(x)
        if straightforward_path_enabled():
            x = x.view(b, h, w, c)
            if s:
                x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            windows = torch.stack(window_partition_literal(x, ws))
            x = window_merge_literal(list(self.attn(windows, mask)), ws, h, w)
            if s:
                x = torch.roll(x, shifts=(s, s), dims=(1, 2))
            x = shortcut + self.drop_path(x.reshape(b, h * w, c))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        # roll + partition and merge + roll back as one token gather each (same tensors, fewer copies)
        forward, inverse = self.window_order(h, w, x.device)
        windows = _gather_tokens(x, forward).view(-1, ws * ws, c)
        x = _gather_tokens(self.attn(windows, mask, mask_windows).view(b, h * w, c), inverse)
        # The first residual sum goes into the gather's own copy (or drop_path's product), which no hook
        # has seen: one fresh buffer less. x + y == y + x exactly in IEEE arithmetic.
        x = self.drop_path(x).add_(shortcut)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _forward_chunked(
        self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None, mask_windows: torch.Tensor | None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inference when no hook watches: the same block, run on groups of windows (both halves).

        Every operation is per token or per window, so the pieces give the same numbers as the whole;
        the intermediates (qkv, scores, MLP hidden) stay a few MB instead of hundreds (at 256x256,
        fresh buffers of 50-150 MB cost more in page faults and memory traffic than their arithmetic).

        The pieces are rectangles of windows. In the cyclically shifted frame every window outside the
        last window row and column is an unwrapped rectangle of the image whose shift mask is zero, so it
        is read and written back through strided views (no index lists) and attends with the position
        bias alone. The last row and column (``mask_windows``, from :meth:`shift_mask`) wrap around and
        mix regions: they are gathered by index and attend with bias + mask.

        The windows partition the map and each piece reads only its own tokens, so ``out`` may be ``x``.
        """
        b, length, c = x.shape
        ws, s = self.window_size, self.shift_size
        n = ws * ws
        rows, cols = h // ws, w // ws
        per = max(1, CHUNK_TOKENS // n)  # windows per piece
        if out is None or not out.is_contiguous():
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
        image = x.reshape(b, h, w, c)
        out_image = out.view(b, h, w, c)

        def run(shortcut: torch.Tensor, piece_mask: torch.Tensor | None) -> torch.Tensor:
            # Both residual sums accumulate into the gathered copy (see WindowAttention.add_to_); the MLP
            # half is per token: it runs on these tokens while they are in cache.
            y = self.attn.add_to_(shortcut, self.norm1(shortcut), piece_mask)
            return self.mlp.add_to_(y, self.norm2(y))

        plain_rows, plain_cols = (rows - 1, cols - 1) if mask is not None else (rows, cols)
        for r0, r1, c0, c1 in _window_rectangles(plain_rows, plain_cols, per):
            area = (slice(None), slice(r0 * ws + s, r1 * ws + s), slice(c0 * ws + s, c1 * ws + s))
            grid = (b, r1 - r0, ws, c1 - c0, ws, c)
            # the copy is ours (clone even when the view happens to be contiguous): it takes both sums
            windows = image[area].view(grid).permute(0, 1, 3, 2, 4, 5)
            shortcut = windows.clone(memory_format=torch.contiguous_format).view(-1, n, c)
            y = run(shortcut, None)
            out_image[area].view(grid).permute(0, 1, 3, 2, 4, 5).copy_(y.view(b, r1 - r0, c1 - c0, ws, ws, c))
        if mask is not None:
            forward, _ = self.window_order(h, w, x.device)
            for j0 in range(0, mask_windows.numel(), per):
                chosen = mask_windows[j0 : j0 + per]
                index = _batch_rows(forward.view(-1, n)[chosen].reshape(-1), b, length)
                y = run(x.reshape(-1, c).index_select(0, index).view(-1, n, c), mask[chosen])
                out.view(-1, c).index_copy_(0, index, y.view(-1, c))
        return out

    def window_order(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's :func:`window_order` for an (h, w) map (cached unless tracing/compiling)."""
        if not _caching_allowed():
            return tuple(t.to(device) for t in window_order(h, w, self.window_size, self.shift_size))
        return _cached_window_order(h, w, self.window_size, self.shift_size, torch.device(device),
                                    torch.is_inference_mode_enabled())

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, window_size={self.window_size}, "
                f"shift_size={self.shift_size}")


class BasicLayer(nn.Module):
    """A sequence of Swin blocks alternating regular and shifted windows (the RSTB's ``residual_group``)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        norm_layer: Callable[[int], nn.Module],
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio, qkv_bias, qk_scale, drop,
                                 attn_drop, drop_path[i], norm_layer)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        owned = False  # whether x is a block's piecewise output that nothing else has seen
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                # activation checkpointing: recompute the block in backward instead of storing activations
                x = activation_checkpoint.checkpoint(block, x, x_size, use_reentrant=False)
            else:
                pieces = block.runs_in_pieces(x)
                # the layer's own input stays intact (the RSTB adds it back); later ones are overwritten
                x = block(x, x_size, overwrite_input=owned and pieces)
                owned = pieces
        return x


def _conv_block(dim: int, kind: str) -> nn.Module:
    """The 3x3 conv closing an RSTB / the body: '1conv' or the lighter bottleneck '3conv'."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":  # dim -> dim/4 -> dim/4 -> dim, saves parameters (SwinIR's lightweight option)
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ValueError(f"unsupported resi_connection {kind!r}; use '1conv' or '3conv'")


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks -> conv (in image layout) -> + input."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], resi_connection: str = "1conv",
                 **layer_kwargs) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, **layer_kwargs)
        self.conv = _conv_block(dim, resi_connection)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = tokens_to_image(self.residual_group(x, x_size), x_size)
        return _add_to_output(image_to_tokens(self.conv(y)), x, self.conv)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H*W, C) tokens, optionally LayerNorm'ed (patch size 1: no projection)."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] | None) -> None:
        super().__init__()
        self.norm = norm_layer(dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = image_to_tokens(x)
        return self.norm(x) if self.norm is not None else x


class SwinIR(nn.Module):
    """RAM-SwinIR on ImageNet-normalised NCHW input (same size out; pads and crops internally).

    Keyword names follow the reference constructor. Args:
        img_size: training patch size; sets the stored ``attn_mask`` buffers and ``mask_token``'s shape.
        patch_size: must be 1 (SwinIR works on pixels).
        in_chans: image channels.
        embed_dim, depths, num_heads: width, blocks per RSTB, heads per RSTB.
        window_size, mlp_ratio, qkv_bias, qk_scale: Swin block settings.
        drop_rate, attn_drop_rate, drop_path_rate: dropouts (stochastic depth rises linearly to the rate).
        norm_layer: constructor of the token norm (LayerNorm; the string "nn.LayerNorm" is accepted).
        ape: absolute position embedding; unsupported (ties the network to one size; RAM never uses it).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: activation checkpointing of every Swin block while training (saves memory).
        upscale: recorded only: with ``upsampler=''`` the reference restores at the input size and ignores it.
        img_range: must be 1.0 (RAM neither rescales nor mean-subtracts).
        upsampler: only '' (no upsampling) is supported.
        resi_connection: '1conv' or '3conv'.
        first_type: '1x1' (RAM) or '3x3' (original SwinIR) ``conv_first``.
        umbed: must be True (the reference's default token embedding).
        finetune_type: accepted and ignored, as the reference swallows it from its configs.
    """

    def __init__(
        self,
        *,
        img_size: int = 64,
        patch_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] | str = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        first_type: str = "1x1",
        umbed: bool = True,
        finetune_type: str | None = None,
    ) -> None:
        super().__init__()
        del finetune_type  # a training option of the reference's configs, meaningless for the network
        _check_supported(patch_size, ape, img_range, upsampler, resi_connection, first_type, umbed, upscale)
        if isinstance(norm_layer, str):  # as recorded in configs/manifests: "nn.LayerNorm"
            if norm_layer.removeprefix("nn.") != "LayerNorm":
                raise ValueError(f"unsupported norm_layer {norm_layer!r} (only 'nn.LayerNorm')")
            norm_layer = nn.LayerNorm
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if img_size < 1 or window_size < 1:
            raise ValueError("img_size and window_size must be positive")
        self.img_size = img_size
        self.window_size = window_size
        self.embed_dim = embed_dim
        self.upscale = upscale
        self.img_range = img_range
        self.upsampler = upsampler

        # Unused by forward; kept so that reference checkpoints (which hold it) load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, in_chans, img_size, img_size))

        # shallow features
        kernel = 1 if first_type == "1x1" else 3
        self.conv_first = nn.Conv2d(in_chans, embed_dim, kernel, 1, kernel // 2)

        # deep features
        self.patch_embed = PatchEmbed(embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(drop_rate)
        # resolution the stored shift masks are made for (img_size padded to whole windows, as forward does)
        side = -(-img_size // window_size) * window_size
        resolution = (side, side)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RSTB(
                embed_dim, resolution, resi_connection, depth=depth, num_heads=heads,
                window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[start : start + depth],
                norm_layer=norm_layer, use_checkpoint=use_checkpoint,
            ))
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = _conv_block(embed_dim, resi_connection)

        # reconstruction (no upsampler: same resolution, same channels)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
        self.apply(_init_weights)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad bottom/right to a multiple of ``window_size`` (as the reference's inference)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window_size, (-w) % self.window_size
        if ph == 0 and pw == 0:
            return x
        if ph >= h or pw >= w:
            raise ValueError(f"input {h}x{w} is too small to reflect-pad to a multiple of {self.window_size}")
        return F.pad(x, (0, pw, 0, ph), mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised -> (B, C, H, W) normalised restoration."""
        h, w = x.shape[-2:]
        x = self.pad(x)
        size = (x.shape[-2], x.shape[-1])
        t = self.patch_embed(self.conv_first(x))  # post-LayerNorm shallow tokens: also the long skip
        z = self.pos_drop(t)
        for layer in self.layers:
            z = layer(z, size)
        z = tokens_to_image(self.norm(z), size)
        body = _add_to_output(self.conv_after_body(z), tokens_to_image(t, size), self.conv_after_body)
        out = self.conv_last(body)
        return out[..., :h, :w].contiguous()  # NCHW, as the reference returns it


def _check_supported(patch_size: int, ape: bool, img_range: float, upsampler: str, resi_connection: str,
                     first_type: str, umbed: bool, upscale: int) -> None:
    """Reject reference options this implementation does not provide, instead of ignoring them."""
    problems = []
    if patch_size != 1:
        problems.append(f"patch_size={patch_size} (only 1)")
    if ape:
        problems.append("ape=True (absolute position embedding)")
    if img_range != 1.0:
        problems.append(f"img_range={img_range} (only 1.0)")
    if upsampler != "":
        problems.append(f"upsampler={upsampler!r} (only '')")
    if resi_connection not in ("1conv", "3conv"):
        problems.append(f"resi_connection={resi_connection!r} (only '1conv', '3conv')")
    if first_type not in ("1x1", "3x3"):
        problems.append(f"first_type={first_type!r} (only '1x1', '3x3')")
    if umbed is not True:
        problems.append(f"umbed={umbed!r} (only True)")
    if not isinstance(upscale, int) or upscale < 1:
        problems.append(f"upscale={upscale!r} (a positive integer)")
    if problems:
        raise ValueError("unsupported SwinIR options: " + ", ".join(problems))


def _init_weights(m: nn.Module) -> None:
    """SwinIR's initialisation: truncated-normal Linear weights, unit LayerNorm (convs keep PyTorch's)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------- descriptor
_UPSAMPLER_PREFIXES = ("conv_before_upsample.", "upsample.", "conv_up1.", "conv_hr.")


def _looks_like(sd: StateDict) -> bool:
    return "conv_first.weight" in sd and any(k.startswith("layers.0.residual_group.blocks.") for k in sd)


def _detect(sd: StateDict) -> dict:
    """RAM-SwinIR's arguments from a state dict; a clear refusal for an original SwinIR checkpoint."""
    arch = "RAM-SwinIR"
    conv_first = shape(sd, "conv_first.weight", arch)
    upsampler_keys = [k for k in sd if k.startswith(_UPSAMPLER_PREFIXES)]
    if "mask_token" not in sd or upsampler_keys:
        signs = ["no mask_token"] if "mask_token" not in sd else []
        if conv_first[2:] != (1, 1):
            signs.append(f"{conv_first[2]}x{conv_first[3]} conv_first")
        if upsampler_keys:
            signs.append(f"up-sampler keys such as {upsampler_keys[0]}")
        raise CheckpointError(
            f"this is an original SwinIR checkpoint ({', '.join(signs)}), not RAM-SwinIR: RAM-SwinIR has a "
            "1x1 conv_first, a mask_token and no mean shift or up-sampler, so original SwinIR weights "
            "cannot be loaded into it"
        )
    embed_dim, in_chans = conv_first[0], conv_first[1]
    depths, heads = [], []
    window_size = None
    for i in indices(sd, r"^layers\.(\d+)\.residual_group\.blocks\.\d+\.", arch):
        depths.append(len(indices(sd, rf"^layers\.{i}\.residual_group\.blocks\.(\d+)\.", arch)))
        table = shape(sd, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table", arch)
        heads.append(table[1])
        side = math.isqrt(table[0])
        if side * side != table[0] or side % 2 == 0:
            raise CheckpointError(
                f"relative_position_bias_table of layer {i} has {table[0]} rows, not (2w-1)^2"
            )
        window_size = window_size or (side + 1) // 2
    hidden, dim = shape(sd, "layers.0.residual_group.blocks.0.mlp.fc1.weight", arch)
    token = tuple(sd["mask_token"].shape)  # (1, 3, img_size, img_size)
    if len(token) != 4 or token[-1] != token[-2]:
        raise CheckpointError(f"RAM-SwinIR mask_token has shape {token}, expected (1, 3, S, S)")
    kwargs: dict = dict(
        img_size=token[-1], patch_size=1, in_chans=in_chans, embed_dim=embed_dim, depths=depths,
        num_heads=heads, mlp_ratio=ratio(hidden, dim), window_size=window_size, upscale=1,
    )
    # Only arguments that differ from the reference defaults, so specs compare equal to the registry's.
    if "layers.0.residual_group.blocks.0.attn.qkv.bias" not in sd:
        kwargs["qkv_bias"] = False
    if "absolute_pos_embed" in sd:
        kwargs["ape"] = True
    if "patch_embed.norm.weight" not in sd:
        kwargs["patch_norm"] = False
    if "layers.0.conv.0.weight" in sd:
        kwargs["resi_connection"] = "3conv"
    if conv_first[2:] == (3, 3):
        kwargs["first_type"] = "3x3"  # RAM-SwinIR's option; with a mask_token it is still RAM's network
    return kwargs


def _bytes_per_pixel(kw: dict) -> int:
    """Tokens of ``embed_dim`` (x, LayerNorm, q/k/v, attention output, MLP hidden at ``mlp_ratio``)
    plus the ``heads x window²`` attention matrix and its softmax; ram-swinir-small at 1 MP on the
    CPU: 1.3 KB/pixel measured, 2.4 estimated."""
    dim = int(kw.get("embed_dim", 96))
    heads = max(kw.get("num_heads", [6]) or [6])
    window = int(kw.get("window_size", 7))
    mlp = float(kw.get("mlp_ratio", 4.0))
    return int(4 * (dim * (10 + 2 * mlp) + 2 * heads * window * window))


ARCHITECTURE = Architecture(
    name="swinir", display_name="RAM-SwinIR", network=SwinIR,
    size_multiple=lambda kw: int(kw.get("window_size", 7)),
    bytes_per_pixel=_bytes_per_pixel,
    checkpoint_blocks=(SwinTransformerBlock,),
    looks_like=_looks_like, detect=_detect,
    expected_keys=("conv_first.weight", "mask_token", "layers.0.residual_group.blocks.0.attn.qkv.weight"),
)
