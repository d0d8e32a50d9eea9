"""AdaSAM, RAM++'s learned pixel-mask generator (RAMPP_SPEC §a, reference ``AdaptiveMaskPixGenerator``).

RAM masks random pixels; RAM++ learns *where* to mask. A one-block ViT scores the patches of the
degraded image, a softmax turns the scores into a distribution over patches, and half of the pixels
are drawn from it. The generator is trained (§b) to raise the probability of patches whose masked
pixels the restoration network reconstructs badly, so pre-training concentrates on hard content.

In plain text, for an image x of S x S pixels, patch P, G = S/P patches a side, N = G^2, width D:

    tokens  = PatchEmbed(x) + pos                  Conv PxP stride P (3 -> D), (B, N, D)
    logits  = Linear_D->1(Block(tokens))           Block: t + Attn(LN(t)), then t + MLP(LN(t))
    p       = softmax(nan_to_num(logits))          (B, N), sums to 1 over the patches
    p_full  = p repeated into each P x P block     (B, 1, S, S), sums to P^2 (each pixel: its patch's p)
    visible = int(N * (1 - mask_ratio)),  n_mask = int(S*S * (1 - visible / N))     (8192 of 128x128)
    mask    = n_mask pixels drawn without replacement with weights p_full   (1 = masked)

and the generator's loss (§b.4), minimised through p only:

    L_prob = -sum(|out - gt| * mask * log(p_full + 1e-6)) / (sum(mask) + 1e-5) / C

Sizes: the positional embedding and the probability grid are fixed at ``img_size``, so the input must be
exactly ``img_size x img_size`` (128 in RAM++: training crops and MAC crops are 128); anything else is
a :class:`AdaSAMInputError`, not a silent resize. The mask is applied outside, as every ramir mask:
masked pixels become 0 in ImageNet-normalised space (:func:`ramir.masking.apply_mask`).

Names of modules and parameters follow the reference so its ``AdaSAM_pretrained.pth`` loads strictly;
``mask_token`` is such a parameter, unused in forward as in the reference.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ramir.errors import CheckpointError, ConfigError, RamirError
from ramir.masking import broadcast_mask

__all__ = [
    "MASK_GENERATORS",
    "AdaSAM",
    "AdaSAMInputError",
    "MaskSample",
    "adaptive_mask_prob_l1_loss",
    "create_mask_generator",
    "generator_config",
    "load_mask_generator",
    "masked_counts",
    "save_mask_generator",
    "sinusoid_table",
]

_PROB_EPS = 1e-6  # inside the log of L_prob
_LOSS_EPS = 1e-5  # added to the number of masked pixels


class AdaSAMInputError(RamirError, ValueError):
    """An image the generator cannot score (wrong size or channels)."""


class AdaSAMConfigError(ConfigError, ValueError):
    """An impossible AdaSAM configuration."""


class MaskSample(NamedTuple):
    """What :meth:`AdaSAM.forward` returns: the drawn mask and the map it was drawn from."""

    mask: torch.Tensor  # (B, 1, H, W) float, 1 = masked; not differentiable
    probabilities: torch.Tensor  # (B, 1, H, W) each pixel's patch probability; carries the gradient


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """The fixed Transformer position table (1, positions, dim), float32: the angle of entry (p, j) is
    p / 10000^(2 floor(j/2) / dim), sin on even j, cos on odd j (float64 as the reference, then rounded)."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return torch.from_numpy(table.astype(np.float32))[None]


def masked_counts(img_size: int, patch_size: int, mask_ratio: float) -> tuple[int, int]:
    """(visible patches, masked pixels) of a configuration: (128, 8192) for RAM++'s 128 / 8 / 0.5.

    The reference's arithmetic in Python floats, truncating twice: ``int(N (1 - r))`` patches stay
    visible, ``int(S^2 (1 - visible / N))`` pixels are masked; pixels, not patches, are drawn.
    """
    patches = (img_size // patch_size) ** 2
    visible = int(patches * (1 - mask_ratio))
    return visible, int(img_size * img_size * (1 - visible / patches))


# --------------------------------------------------------------------------------------------------
# The score head: one pre-norm ViT block


class _PatchEmbed(nn.Module):
    """Non-overlapping P x P patches to D-dimensional tokens, row-major: (B, 3, S, S) -> (B, N, D)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention over the patches: softmax(q k^T / sqrt(d)) v, no qkv bias."""

    def __init__(self, dim: int, num_heads: int, drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class _Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2 -> dropout; no dropout after the GELU, as in the reference."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class _Block(nn.Module):
    """Pre-norm transformer block without layer-scale or drop-path."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------------
# The generator


class AdaSAM(nn.Module):
    """Adaptive pixel-mask generator (7,431,937 parameters in RAM++'s configuration).

    Args (the reference's keywords; the defaults are RAM++'s ``AdaSAM.yaml``, not the reference class's
    224 / 16 / 0.75 / False):
        img_size: the only accepted input side, in pixels.
        patch_size: side of the scored patches; must divide ``img_size``.
        in_chans: image channels.
        embed_dim: token width D (8 heads of D/8, MLP 4 D).
        mask_ratio: fraction of patches counted as masked; sets how many pixels are drawn (see module doc).
        use_learnable_pos_emb: a learned position embedding (a parameter, RAM++) instead of the fixed
            sinusoid table (a buffer).
    """

    num_heads = 8
    mlp_ratio = 4.0
    drop_rate = 0.1  # after attn.proj and mlp.fc2; active in train mode, as during RAM++ pre-training

    def __init__(
        self,
        *,
        img_size: int = 128,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 768,
        mask_ratio: float = 0.5,
        use_learnable_pos_emb: bool = True,
    ) -> None:
        super().__init__()
        if patch_size < 1 or img_size < 1 or img_size % patch_size:
            raise AdaSAMConfigError(f"AdaSAM: patch_size {patch_size} must divide img_size {img_size}")
        if embed_dim % self.num_heads:
            raise AdaSAMConfigError(f"AdaSAM: embed_dim {embed_dim} not divisible by {self.num_heads} heads")
        if not 0.0 <= mask_ratio <= 1.0:
            raise AdaSAMConfigError(f"AdaSAM: mask_ratio must be in [0, 1], got {mask_ratio}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.mask_ratio = mask_ratio
        self.grid = img_size // patch_size
        self.num_patches = self.grid**2
        self.visible_patches, self.num_masked_pixels = masked_counts(img_size, patch_size, mask_ratio)

        # Parameter order = the reference's: pos_embed_probs (when learned), mask_token, then children.
        if use_learnable_pos_emb:
            self.pos_embed_probs = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
            nn.init.trunc_normal_(self.pos_embed_probs, std=0.02)
        else:
            self.register_buffer("pos_embed_probs", sinusoid_table(self.num_patches, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # unused, kept for the state dict
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.patch_embed = _PatchEmbed(patch_size, in_chans, embed_dim)
        self.get_token_probs = nn.Sequential(
            _Block(embed_dim, self.num_heads, self.mlp_ratio, self.drop_rate),
            nn.Linear(embed_dim, 1),
            nn.Flatten(start_dim=1),
        )
        for module in self.get_token_probs.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.img_size,) * 2:
            raise AdaSAMInputError(
                f"AdaSAM scores exactly (B, {self.in_chans}, {self.img_size}, {self.img_size}) images (its "
                f"position embedding and probability grid are fixed at {self.img_size}), got "
                f"{tuple(x.shape)}; crop to {self.img_size}x{self.img_size} first"
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The score head's output, one logit per patch (B, N), patches row-major."""
        self._check_input(x)
        return self.get_token_probs(self.patch_embed(x) + self.pos_embed_probs)

    def patch_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The distribution over the patches of each image: (B, N), each row sums to 1."""
        return self.probabilities_from_logits(self.logits(x))

    @staticmethod
    def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
        """softmax over the patches of the NaN-cleaned logits (a NaN score becomes 0, +-inf the largest
        finite floats, as the reference's ``nan_to_num``)."""
        return torch.softmax(torch.nan_to_num(logits), dim=-1)

    def pixel_probabilities(self, patch_probs: torch.Tensor) -> torch.Tensor:
        """Each patch probability copied into its P x P pixels, undivided: (B, 1, S, S), sums to P^2."""
        grid = patch_probs.reshape(-1, self.grid, self.grid)
        full = grid.repeat_interleave(self.patch_size, dim=1).repeat_interleave(self.patch_size, dim=2)
        return full.unsqueeze(1)

    def sample_mask(
        self, pixel_probs: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``num_masked_pixels`` distinct pixels per image with weights ``pixel_probs`` (B, 1, S, S):
        a (B, 1, S, S) float mask, 1 = masked. Without ``generator`` the draw uses torch's global RNG,
        as the reference (same seed, same device, same weights -> the reference's mask)."""
        b = pixel_probs.shape[0]
        weights = pixel_probs.detach().reshape(b, -1)
        if self.num_masked_pixels == 0:  # mask_ratio 0 (multinomial refuses to draw nothing)
            return torch.zeros_like(pixel_probs.detach())
        idx = torch.multinomial(weights, self.num_masked_pixels, replacement=False, generator=generator)
        mask = torch.zeros_like(weights).scatter_(1, idx, 1.0)
        return mask.reshape(pixel_probs.shape)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MaskSample:
        """Score the degraded image ``x`` (ImageNet-normalised, S x S) and draw its pixel mask."""
        probs = self.pixel_probabilities(self.patch_probabilities(x))
        return MaskSample(self.sample_mask(probs, generator), probs)


def adaptive_mask_prob_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pixel_probs: torch.Tensor
) -> torch.Tensor:
    """The generator's loss (RAM++ ``AdaptiveMaskProbL1``, weight 1; RAM++ trains with 1e-4 of it):
    ``-sum(|pred - target| * m * log(p + 1e-6)) / (sum(m) + 1e-5) / C``.

    The reconstruction error is detached: only ``pixel_probs`` (the generator) receives gradient, and
    minimising the loss moves probability towards patches whose masked pixels were restored worst.
    ``mask`` and ``pixel_probs`` broadcast as (N or 1, 1, H, W); the restoration loss that goes with it
    is :func:`ramir.masking.masked_l1_loss` (``AdaptiveMaskL1``, the same formula as RAM's).
    """
    m = broadcast_mask(mask, pred)
    err = torch.abs(pred.detach() - target)
    return -(err * m * torch.log(pixel_probs + _PROB_EPS)).sum() / (m.sum() + _LOSS_EPS) / pred.shape[1]


MASK_GENERATORS: dict[str, type[nn.Module]] = {"adasam": AdaSAM}


def create_mask_generator(name: str = "adasam", **kwargs: Any) -> nn.Module:
    """A learned mask generator by name, with the reference's constructor keywords
    (``create_mask_generator("adasam", img_size=128, patch_size=8, ...)``)."""
    if name not in MASK_GENERATORS:
        raise KeyError(f"unknown mask generator {name!r}; known: {', '.join(sorted(MASK_GENERATORS))}")
    return MASK_GENERATORS[name](**kwargs)


# --------------------------------------------------------------------------------------------------
# Checkpoints: ramir's format with arch "adasam", or the reference's AdaSAM_pretrained.pth


def generator_config(model: AdaSAM) -> dict[str, Any]:
    """The constructor keywords that rebuild ``model``: what its checkpoint records."""
    return {
        "img_size": model.img_size,
        "patch_size": model.patch_size,
        "in_chans": model.in_chans,
        "embed_dim": model.patch_embed.proj.out_channels,
        "mask_ratio": model.mask_ratio,
        "use_learnable_pos_emb": isinstance(model.pos_embed_probs, nn.Parameter),
    }


def save_mask_generator(
    path: Any,
    model: AdaSAM,
    *,
    ema_state_dict: dict[str, torch.Tensor] | None = None,
    stage: str = "",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` in ramir's checkpoint format (arch ``adasam`` and its keywords in the header):
    the raw weights under ``params``, which RAM++'s MAC loads (RAMPP_SPEC §b), the EMA under
    ``params_ema``."""
    from ramir.archs import NetworkSpec
    from ramir.checkpoints import save_checkpoint

    save_checkpoint(path, model, spec=NetworkSpec("adasam", generator_config(model)), stage=stage,
                    ema_state_dict=ema_state_dict, metadata=metadata)


def _detect_config(state_dict: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    """Keywords of a file without recorded ones (the reference's ``.pth``) from its shapes. The mask ratio
    is not in the weights: RAM++'s 0.5 is assumed (MAC uses the probabilities only). Sinusoid positions
    are a buffer in the state dict too; they are recognised by their values."""
    if "patch_embed.proj.weight" not in state_dict or "pos_embed_probs" not in state_dict:
        raise CheckpointError(f"{where} is not an AdaSAM mask generator (no patch_embed.proj.weight / "
                              "pos_embed_probs)")
    dim, chans, patch, _ = state_dict["patch_embed.proj.weight"].shape
    positions = state_dict["pos_embed_probs"].shape[1]
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise CheckpointError(f"{where}: {positions} position embeddings are not a square grid of patches")
    fixed = torch.equal(state_dict["pos_embed_probs"].float().cpu(), sinusoid_table(positions, dim))
    return {"img_size": grid * patch, "patch_size": patch, "in_chans": chans, "embed_dim": dim,
            "use_learnable_pos_emb": not fixed}


def load_mask_generator(
    path: Any, *, prefer_ema: bool = False, device: str | torch.device = "cpu"
) -> nn.Module:
    """A trained generator in eval mode, from ramir's ``*.generator.safetensors`` (written by
    ``stage: pretrain_adasam``) or the reference's ``AdaSAM_pretrained.pth``. The raw weights by default,
    as RAM++'s MAC loads them (key ``params``); ``prefer_ema`` takes the EMA when the file has one."""
    from ramir.checkpoints import load_checkpoint, load_state_dict_strict

    ckpt = load_checkpoint(path, prefer_ema=prefer_ema)
    if ckpt.spec is not None and ckpt.spec.arch not in MASK_GENERATORS:
        raise CheckpointError(f"{path} holds a {ckpt.spec.arch} network, not a mask generator")
    if ckpt.spec is not None:
        name, kwargs = ckpt.spec.arch, dict(ckpt.spec.kwargs)
    else:
        name, kwargs = "adasam", _detect_config(ckpt.state_dict, str(path))
    try:
        model = create_mask_generator(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {name} with the keywords of {path} ({kwargs}): {exc}") from None
    load_state_dict_strict(model, ckpt.state_dict, f"{name} mask generator")
    return model.to(device).eval()
