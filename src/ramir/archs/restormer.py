"""RAM-Restormer: the mask-pre-trained network of RAM++ (RAMPP_SPEC §c, reference ``AdaSAM_RestormerWoskip``).

Restormer (Zamir et al., CVPR 2022) is the 4-level U-Net of MDTA/GDFN transformer blocks that PromptIR
is built on; RAM++ pre-trains it with AdaSAM masks and ranks its layers by MAC. Two things set RAM++'s
variant apart from the published Restormer and from ``ramir``'s PromptIR:

* **no global skip**: the output is the last conv's output, cropped (``output(...)``, no ``+ input``).
  A masked pixel is 0 at the input, so a residual net would have to cancel the input where it is
  visible and invent it where it is not; without the skip the network predicts the image itself.
* no prompt blocks; ``up4_3`` up-samples the whole latent (8 dim -> 4 dim channels) and
  ``reduce_chan_level3`` maps the concatenation with the level-3 skip (8 dim) to 4 dim. ``dim`` is free.

The blocks (MDTA, GDFN, channel LayerNorm, pixel-(un)shuffle resampling) are PromptIR's, shared from
:mod:`ramir.archs.promptir` with its fast CPU paths. Module and parameter names follow the reference,
so its state dicts load as they are, and :func:`ramir.attributable_layers` lists the reference's MAC
layers in its order (406 for the defaults). As the other networks, the module knows nothing about masks:
the reference's ``forward(inp, mask, tokens)`` with zero tokens equals ``forward(apply_mask(inp, mask))``
(verified bit-exactly on the fixtures). Input and output are ImageNet-normalised NCHW; any size is
reflect-padded bottom/right to a multiple of 16 inside and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ramir.archs.descriptor import Architecture, StateDict, differing
from ramir.archs.promptir import (
    BACKBONE_DEFAULTS,
    PAD_MULTIPLE,
    RESTORMER_FAMILY,
    OverlapPatchEmbed,
    Upsample,
    _blocks,
    _reflect_pad_to_multiple,
    add_encoder,
    encode,
    fast_layout,
    looks_like_restormer_family,
    read_restormer_backbone,
    run_blocks,
)
from ramir.errors import ConfigError


class RestormerConfigError(ConfigError, ValueError):
    """An impossible RAM-Restormer configuration (a ValueError too, for callers outside the CLI)."""


class RAMRestormer(nn.Module):
    """Restormer without the global skip, as pre-trained by RAM++ (26,126,644 parameters by default).

    Args:
        inp_channels, out_channels: image channels (3).
        dim: features at full resolution; levels 1-4 have dim, 2 dim, 4 dim, 8 dim channels.
        num_blocks: transformer blocks at levels 1-4 (the decoder repeats the counts of 1-3).
        num_refinement_blocks: blocks after the decoder, at full resolution (2 dim channels).
        heads: attention heads at levels 1-4 (decoder level 1 and refinement use heads[0]).
        ffn_expansion_factor: GDFN hidden width = int(channels * factor).
        bias: biases of the convolutions inside the blocks, the 1x1 reductions and the first/last convs.
        LayerNorm_type: "WithBias" (RAM++) or "BiasFree".
        finetune_type: accepted for reference configs; ignored.
        img_size: accepted for reference configs; unused (it sized the reference's zero mask token,
            which masking outside the network replaces).
        use_checkpoint: recompute transformer blocks in the backward pass (training big crops).
    """

    size_multiple = PAD_MULTIPLE  # read by ramir.archs.network_multiple (tiling, ONNX padding)

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
        finetune_type: str | None = None,
        img_size: int = 128,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        _validate(dim, num_blocks, heads, LayerNorm_type, num_refinement_blocks)
        del finetune_type, img_size  # reference-compatibility only
        self.use_checkpoint = use_checkpoint
        ffn, ln = ffn_expansion_factor, LayerNorm_type
        c2, c3, c4 = dim * 2, dim * 4, dim * 8  # channels of levels 2-4 (level 1: dim)

        # Registration order = the reference's parameter order (checkpoints, MAC layer indices).
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim, bias)
        add_encoder(self, dim, num_blocks, heads, ffn, bias, ln)

        self.up4_3 = Upsample(c4)  # c4 -> c3 at 1/4
        self.reduce_chan_level3 = nn.Conv2d(c3 + c3, c3, kernel_size=1, bias=bias)
        self.decoder_level3 = _blocks(num_blocks[2], c3, heads[2], ffn, bias, ln)
        self.up3_2 = Upsample(c3)  # c3 -> c2 at 1/2
        self.reduce_chan_level2 = nn.Conv2d(c2 + c2, c2, kernel_size=1, bias=bias)
        self.decoder_level2 = _blocks(num_blocks[1], c2, heads[1], ffn, bias, ln)
        self.up2_1 = Upsample(c2)  # c2 -> c1 at full resolution; concatenated with enc1, not reduced
        self.decoder_level1 = _blocks(num_blocks[0], c2, heads[0], ffn, bias, ln)
        self.refinement = _blocks(num_refinement_blocks, c2, heads[0], ffn, bias, ln)
        self.output = nn.Conv2d(c2, out_channels, kernel_size=3, padding=1, bias=bias)

    def _run(self, blocks: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(blocks, x, recompute=self.use_checkpoint and self.training)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return fast_layout(x)  # channels-last float32 on the CPU, as PromptIR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised (B, C, H, W) -> restored, same space and size."""
        h, w = x.shape[-2:]
        inp = self._layout(_reflect_pad_to_multiple(x, PAD_MULTIPLE))

        enc1, enc2, enc3, latent = encode(self, inp)

        dec3 = self.reduce_chan_level3(self._layout(torch.cat([self.up4_3(latent), enc3], dim=1)))
        dec3 = self._run(self.decoder_level3, dec3)
        dec2 = self.reduce_chan_level2(self._layout(torch.cat([self.up3_2(dec3), enc2], dim=1)))
        dec2 = self._run(self.decoder_level2, dec2)
        dec1 = self._run(self.decoder_level1, self._layout(torch.cat([self.up2_1(dec2), enc1], dim=1)))
        dec1 = self._run(self.refinement, dec1)

        return self.output(dec1)[..., :h, :w].contiguous()  # no global skip (RAMPP_SPEC §c)


def _validate(
    dim: int, num_blocks: Sequence[int], heads: Sequence[int], layer_norm_type: str, refinement: int
) -> None:
    """Fail at construction with one clear line rather than with a shape error deep in forward."""

    def bad(msg: str) -> RestormerConfigError:
        return RestormerConfigError(f"RAM-Restormer: {msg}")

    if dim < 2 or dim % 2:
        raise bad(f"dim must be even and >= 2 (Downsample halves it before unshuffling), got {dim}")
    if len(num_blocks) != 4 or len(heads) != 4:
        raise bad(f"num_blocks and heads need 4 entries, got {list(num_blocks)} and {list(heads)}")
    if any(n < 1 for n in num_blocks) or refinement < 0:
        raise bad(f"num_blocks must be >= 1 and num_refinement_blocks >= 0, got {list(num_blocks)}, "
                  f"{refinement}")
    if layer_norm_type not in ("WithBias", "BiasFree"):
        raise bad(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}")
    # levels 1-4, then decoder level 1 and the refinement: 2 dim channels with heads[0]
    needs = [(dim, heads[0]), (dim * 2, heads[1]), (dim * 4, heads[2]), (dim * 8, heads[3])]
    for c, n_heads in [*needs, (dim * 2, heads[0])]:
        if n_heads < 1 or c % n_heads:
            raise bad(f"{c} channels are not divisible by {n_heads} heads (heads={list(heads)})")


# ------------------------------------------------------------------------------------- descriptor
def _looks_like(sd: StateDict) -> bool:
    """PromptIR's keys without any prompt or prompt-fusion module. (RFR's state dicts have these keys
    too: RFR is registered, and so recognised, first.)"""
    return looks_like_restormer_family(sd) and "reduce_chan_level3.weight" in sd and not any(
        k.startswith(("prompt", "noise_level", "reduce_noise_level")) for k in sd
    )


def detect_restormer(sd: StateDict) -> dict:
    """RAM-Restormer (``AdaSAM_RestormerWoskip``): the PromptIR reading of shapes, without prompts.

    The published Restormer has the same keys and shapes but adds its input to the output; its
    weights load here and then run without that skip (keys cannot tell the two apart)."""
    return differing(read_restormer_backbone(sd, "RAM-Restormer"), BACKBONE_DEFAULTS)


ARCHITECTURE = Architecture(
    name="restormer", display_name="RAM-Restormer", network=RAMRestormer, **RESTORMER_FAMILY,
    looks_like=_looks_like, detect=detect_restormer,
    expected_keys=("patch_embed.proj.weight", "encoder_level1.0.attn.temperature",
                   "reduce_chan_level3.weight"),
)
