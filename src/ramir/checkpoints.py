"""Checkpoints: ramir's own safetensors format, the reference's ``.pth`` files, and network detection.

ramir writes one self-describing ``.safetensors`` file: the weights under ``params.<key>`` (and an
optional EMA copy under ``params_ema.<key>``, mirroring the reference's ``{'params', 'params_ema'}``
dict) plus string metadata that rebuilds the network (``arch``, ``config``) and records where the
weights come from (``stage``, ``provenance``). Nothing is ever unpickled with code execution: PyTorch
files are read with ``torch.load(..., weights_only=True)``.

Files without a recorded architecture (the reference's ``.pth``, PromptIR's Lightning checkpoints,
bare state dicts) are recognised from their keys and shapes, as spandrel does, and the constructor
arguments are read back from tensor shapes. Loading is strict: a missing, unexpected or mis-shaped key
is an error naming the keys; the only keys ever dropped are the convs the original PromptIR defines
and never calls (``chnl_reduce1-3``, ``reduce_noise_channel_1-3``), and a warning lists them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir.archs import MODEL_CONFIGS, NetworkSpec, build_network, network_spec
from ramir.errors import CheckpointError
from ramir.fileio import atomic_path

FORMAT_VERSION = "1"
PARAMS, PARAMS_EMA = "params", "params_ema"
SOURCE_FORMATS = ("ramir", "reference", "lightning", "bare")

# Convs the original PromptIR constructs but never uses in forward; RAM's PromptIR (and ours) omits them.
UNUSED_PROMPTIR_KEYS = re.compile(r"^(chnl_reduce[123]|reduce_noise_channel_[123])\.(weight|bias)$")
# State-dict entries that are buffers (constants rebuilt by the constructor), not parameters.
_BUFFER_SUFFIXES = (".relative_position_index", ".attn_mask")

_UPSAMPLER_PREFIXES = ("conv_before_upsample.", "upsample.", "conv_up1.", "conv_hr.")
_EXPECTED_KEYS = {
    "RAM-SwinIR": ("conv_first.weight", "mask_token", "layers.0.residual_group.blocks.0.attn.qkv.weight"),
    "PromptIR": ("patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "prompt1.prompt_param"),
    "NAFNet": ("intro.weight", "encoders.0.0.conv1.weight", "ending.weight"),
    "RAM-Restormer": ("patch_embed.proj.weight", "encoder_level1.0.attn.temperature",
                      "reduce_chan_level3.weight"),
    "RAM++ RFR": ("dr_adaptation1.adaptation.0.weight", "dino_fusion_deep.temperature"),
}

StateDict = dict[str, torch.Tensor]


@dataclass
class Checkpoint:
    """What a checkpoint file holds, whatever its format.

    ``state_dict`` is the preferred weights (the EMA when there is one and ``prefer_ema``);
    ``raw_state_dict`` the plain (non-EMA) weights, which fine-tuning starts from (RAM_SPEC §4); a file
    holding only ``params_ema`` has that as both. ``spec`` is the file's recorded architecture or the
    one detected from the keys (``None`` when neither is possible).
    """

    state_dict: StateDict
    raw_state_dict: StateDict
    ema_state_dict: StateDict | None
    spec: NetworkSpec | None
    stage: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    source_format: str = "bare"
    dropped_keys: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# small helpers


def _fmt_keys(keys: list[str], limit: int = 5) -> str:
    """``a, b, c, d, e (+12 more)``: error messages stay one readable line."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Remove a (possibly repeated) leading ``prefix`` from every key that has it."""
    out: StateDict = {}
    for key, value in sd.items():
        while key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = value
    return out


def _as_state_dict(obj: Any, what: str) -> StateDict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} is a {type(obj).__name__}, not a state dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} holds entries that are not tensors: {_fmt_keys(bad)}")
    return dict(obj)


def parameter_count(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of parameters in a state dict (buffers such as SwinIR's attention masks excluded)."""
    return sum(v.numel() for k, v in state_dict.items() if not k.endswith(_BUFFER_SUFFIXES))


def registered_name(spec: NetworkSpec | None) -> str | None:
    """The ``MODEL_CONFIGS`` name whose architecture and arguments equal ``spec`` (first name wins)."""
    if spec is None:
        return None
    want = json.dumps(spec.kwargs, sort_keys=True, default=str)
    for name, cfg in MODEL_CONFIGS.items():
        if cfg.arch == spec.arch and json.dumps(cfg.kwargs, sort_keys=True, default=str) == want:
            return name
    return None


# --------------------------------------------------------------------------------------------------
# reading files


def _check_path(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")


def _sniff(path: Path) -> str:
    """'safetensors', 'torch' or a description of what the file looks like instead (by content)."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len > size - 8:
            raise CheckpointError(
                f"{path} is a truncated or corrupt safetensors file (header larger than the file)"
            )
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"  # zip container of torch.save, or a legacy / plain pickle
    looks = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
             b"\x89HDF": "an HDF5 file", b"%PDF": "a PDF"}
    for magic, what in looks.items():
        if head.startswith(magic):
            return what
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary file"


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is a truncated or corrupt safetensors file ({detail})") from None
    return tensors, metadata


def _weights_only_detail(message: str) -> str:
    """The useful sentence of torch's long weights_only refusal (e.g. 'Unsupported global: ...')."""
    for marker in ("Unsupported global:", "Unsupported operand", "WeightsUnpickler error:"):
        i = message.find(marker)
        if i >= 0:
            text = message[i:].replace("WeightsUnpickler error:", "").strip()
            return text.split(" was not an allowed global")[0].splitlines()[0].strip()
    return "refused by the weights-only unpickler"


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path} contains arbitrary pickled objects ({_weights_only_detail(str(exc))}) and will not "
                "be executed; load it in a trusted session and re-save its state dict"
            ) from None
        raise CheckpointError(f"{path} is a truncated or corrupt PyTorch file ({exc})") from None
    except Exception as exc:  # truncated zip, short read, garbage after the magic bytes
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is a truncated or corrupt PyTorch file ({detail})") from None


# --------------------------------------------------------------------------------------------------
# unpacking the known layouts


def _unpack_ramir(path: str, tensors: StateDict, meta: dict[str, str]) -> dict[str, Any]:
    version = meta.get("ramir_format", "")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has ramir_format {version!r}; this ramir reads format {FORMAT_VERSION}"
        )
    raw = {k[len(PARAMS) + 1:]: v for k, v in tensors.items() if k.startswith(PARAMS + ".")}
    ema = {k[len(PARAMS_EMA) + 1:]: v for k, v in tensors.items() if k.startswith(PARAMS_EMA + ".")}
    stray = [k for k in tensors if not k.startswith((PARAMS + ".", PARAMS_EMA + "."))]
    if stray:
        raise CheckpointError(f"{path}: tensors outside params./params_ema.: {_fmt_keys(stray)}")
    try:
        config = json.loads(meta.get("config") or "{}")
        provenance = json.loads(meta.get("provenance") or "{}")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has corrupt JSON metadata ({exc})") from None
    arch = meta.get("arch", "")
    return {
        "raw": raw or ema, "ema": ema or None, "format": "ramir", "stage": meta.get("stage", ""),
        "spec": NetworkSpec(arch, config) if arch else None, "metadata": provenance,
    }


def _unpack_torch(path: str, obj: Any) -> dict[str, Any]:
    """Reference ``{'params'[, 'params_ema']}``, Lightning ``{'state_dict': {'net.…'}}`` or bare."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of weights")
    if PARAMS in obj or PARAMS_EMA in obj:
        raw = _as_state_dict(obj[PARAMS], f"{path}['params']") if PARAMS in obj else None
        ema = _as_state_dict(obj[PARAMS_EMA], f"{path}['params_ema']") if PARAMS_EMA in obj else None
        return {"raw": raw if raw is not None else ema, "ema": ema, "format": "reference"}
    if isinstance(obj.get("state_dict"), Mapping):
        sd = _as_state_dict(obj["state_dict"], f"{path}['state_dict']")
        net = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
        if net:
            others = [k for k in sd if not k.startswith("net.")]
            if others:  # other sub-modules of the LightningModule (losses...), not the network
                warnings.warn(f"{path}: ignored Lightning entries outside 'net.': {_fmt_keys(others)}",
                              stacklevel=4)
            sd = net
        return {"raw": sd, "ema": None, "format": "lightning"}
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"raw": _as_state_dict(obj, path), "ema": None, "format": "bare"}
    keys = [str(k) for k in obj]
    raise CheckpointError(
        f"{path} holds no weights: top-level keys are {_fmt_keys(keys) or 'none'}; expected 'params', "
        "'params_ema', 'state_dict' or a state dict of tensors"
    )


def _drop_unused_promptir(sd: StateDict) -> tuple[StateDict, list[str]]:
    if not _looks_like_promptir(sd):
        return sd, []
    dropped = [k for k in sd if UNUSED_PROMPTIR_KEYS.match(k)]
    return {k: v for k, v in sd.items() if k not in dropped}, dropped


def load_checkpoint(path_or_state_dict: Any, prefer_ema: bool = True) -> Checkpoint:
    """Read a ramir ``.safetensors``, a reference/Lightning ``.pth`` or a state dict; never runs pickled code.

    ``module.`` prefixes (DDP) are stripped; the original PromptIR's unused convs are dropped with a
    warning. Raises :class:`CheckpointError` with one line for every unreadable input.
    """
    if isinstance(path_or_state_dict, Mapping):
        where = "state dict"
        unpacked = _unpack_torch(where, path_or_state_dict)
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        where = str(path)
        _check_path(path)
        kind = _sniff(path)
        if kind == "safetensors":
            tensors, meta = _read_safetensors(path)
            if "ramir_format" in meta:
                unpacked = _unpack_ramir(where, tensors, meta)
            else:  # a plain safetensors state dict from elsewhere
                unpacked = {"raw": tensors, "ema": None, "format": "bare"}
        elif kind == "torch":
            unpacked = _unpack_torch(where, _read_torch(path))
        else:
            raise CheckpointError(f"{path} is not a checkpoint (expected .safetensors or a PyTorch .pth; "
                                  f"it looks like {kind})")
    else:
        raise CheckpointError(f"cannot load a checkpoint from a {type(path_or_state_dict).__name__}")

    raw, dropped = _drop_unused_promptir(_strip_prefix(unpacked["raw"], "module."))
    ema = unpacked["ema"]
    if ema is not None:
        ema, dropped_ema = _drop_unused_promptir(_strip_prefix(ema, "module."))
        dropped = sorted(set(dropped) | set(dropped_ema))
    if not raw:
        raise CheckpointError(f"{where} holds no tensors")
    if dropped:
        warnings.warn(
            f"{where}: dropped {len(dropped)} keys of the original PromptIR's unused convs "
            f"(defined but never called in its forward): {', '.join(dropped)}", stacklevel=2,
        )
    spec = unpacked.get("spec")
    preferred = ema if (prefer_ema and ema is not None) else raw
    if spec is None:
        try:
            spec = detect_architecture(preferred)
        except CheckpointError:
            spec = None  # load_network re-runs detection and raises its message
    return Checkpoint(
        state_dict=preferred, raw_state_dict=raw, ema_state_dict=ema, spec=spec,
        stage=unpacked.get("stage", ""), metadata=unpacked.get("metadata", {}),
        source_format=unpacked["format"], dropped_keys=list(dropped),
    )


# --------------------------------------------------------------------------------------------------
# detection from keys and shapes


def _looks_like_swinir(sd: Mapping[str, torch.Tensor]) -> bool:
    return "conv_first.weight" in sd and any(k.startswith("layers.0.residual_group.blocks.") for k in sd)


def _looks_like_promptir(sd: Mapping[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in sd and any(k.startswith("encoder_level1.") for k in sd)


def _shape(sd: Mapping[str, torch.Tensor], key: str, arch: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"looks like {arch} but has no {key!r}")
    return tuple(sd[key].shape)


def _indices(sd: Mapping[str, torch.Tensor], pattern: str, arch: str) -> list[int]:
    """Sorted indices captured by ``pattern`` (one group), checked to run 0..n-1."""
    found = sorted({int(m.group(1)) for k in sd if (m := re.match(pattern, k))})
    if found != list(range(len(found))):
        raise CheckpointError(f"looks like {arch} but the indices of {pattern!r} are not 0..n-1: {found}")
    return found


def _ratio(hidden: int, dim: int) -> float | int:
    """The simplest r with int(dim * r) == hidden (an int when exact)."""
    if hidden % dim == 0:
        return hidden // dim
    for decimals in range(1, 8):
        r = round(math.ceil(hidden / dim * 10**decimals) / 10**decimals, decimals)
        if int(dim * r) == hidden:
            return r
    return hidden / dim


def _detect_swinir(sd: Mapping[str, torch.Tensor]) -> NetworkSpec:
    arch = "RAM-SwinIR"
    conv_first = _shape(sd, "conv_first.weight", arch)
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
    layers = _indices(sd, r"^layers\.(\d+)\.residual_group\.blocks\.\d+\.", arch)
    depths, heads = [], []
    window_size = None
    for i in layers:
        blocks = _indices(sd, rf"^layers\.{i}\.residual_group\.blocks\.(\d+)\.", arch)
        depths.append(len(blocks))
        table = _shape(sd, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table", arch)
        heads.append(table[1])
        side = math.isqrt(table[0])
        if side * side != table[0] or side % 2 == 0:
            raise CheckpointError(
                f"relative_position_bias_table of layer {i} has {table[0]} rows, not (2w-1)^2"
            )
        window_size = window_size or (side + 1) // 2
    hidden, dim = _shape(sd, "layers.0.residual_group.blocks.0.mlp.fc1.weight", arch)
    token = tuple(sd["mask_token"].shape)  # (1, 3, img_size, img_size)
    if len(token) != 4 or token[-1] != token[-2]:
        raise CheckpointError(f"RAM-SwinIR mask_token has shape {token}, expected (1, 3, S, S)")
    kwargs: dict[str, Any] = dict(
        img_size=token[-1], patch_size=1, in_chans=in_chans, embed_dim=embed_dim, depths=depths,
        num_heads=heads, mlp_ratio=_ratio(hidden, dim), window_size=window_size, upscale=1,
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
    return NetworkSpec("swinir", kwargs)


_PROMPTIR_DEFAULTS: dict[str, Any] = dict(
    inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
    prompt_dims=[64, 128, 320], prompt_len=5, prompt_sizes=[64, 32, 16],
)


def _expansion_factor(pairs: list[tuple[int, int]]) -> float:
    """PromptIR's GDFN hidden width is int(channels * f): find f matching every block (2.66 if it does)."""
    def fits(f: float) -> bool:
        return all(int(d * f) == h for d, h in pairs)

    if fits(2.66):
        return 2.66
    lo = max(h / d for d, h in pairs)
    for decimals in range(0, 8):
        f = round(math.ceil(lo * 10**decimals) / 10**decimals, decimals)
        if fits(f):
            return float(f)
    raise CheckpointError(f"no ffn_expansion_factor fits the GDFN widths (channels, hidden) {pairs[:5]}")


def _detect_promptir(sd: Mapping[str, torch.Tensor]) -> NetworkSpec:
    arch = "PromptIR"
    dim, inp = _shape(sd, "patch_embed.proj.weight", arch)[:2]
    out = _shape(sd, "output.weight", arch)[0]
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    num_blocks = [len(_indices(sd, rf"^{name}\.(\d+)\.", arch)) for name in levels]
    heads = [_shape(sd, f"{name}.0.attn.temperature", arch)[0] for name in levels]
    refinement = len(_indices(sd, r"^refinement\.(\d+)\.", arch))
    pairs = sorted({tuple(v.shape[:2]) for k, v in sd.items() if k.endswith(".ffn.project_out.weight")})
    if not pairs:
        raise CheckpointError("looks like PromptIR but has no '*.ffn.project_out.weight'")
    found: dict[str, Any] = dict(
        inp_channels=inp, out_channels=out, dim=dim, num_blocks=num_blocks,
        num_refinement_blocks=refinement, heads=heads, ffn_expansion_factor=_expansion_factor(pairs),
        bias="encoder_level1.0.attn.qkv.bias" in sd,
        LayerNorm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
    )
    decoder = "prompt1.prompt_param" in sd
    if decoder:  # prompt_param: (1, prompt_len, prompt_dim, size, size)
        shapes = [_shape(sd, f"prompt{i}.prompt_param", arch) for i in (1, 2, 3)]
        found.update(prompt_dims=[s[2] for s in shapes], prompt_len=shapes[0][1],
                     prompt_sizes=[s[3] for s in shapes])
    kwargs: dict[str, Any] = {"decoder": decoder}
    kwargs.update({k: v for k, v in found.items() if v != _PROMPTIR_DEFAULTS[k]})
    return NetworkSpec("promptir", kwargs)


def _looks_like_restormer(sd: Mapping[str, torch.Tensor]) -> bool:
    """PromptIR's keys without any prompt or prompt-fusion module (RAM++'s RAM-Restormer)."""
    return _looks_like_promptir(sd) and "reduce_chan_level3.weight" in sd and not any(
        k.startswith(("prompt", "noise_level", "reduce_noise_level")) for k in sd
    ) and not _looks_like_rfr(sd)


def _looks_like_rfr(sd: Mapping[str, torch.Tensor]) -> bool:
    """RAM++'s RFR: RAM-Restormer's keys plus the DINOv2 fusion modules."""
    return "dino_fusion_deep.temperature" in sd and "dr_adaptation1.adaptation.0.weight" in sd


# DINOv2 width -> (hub name, depth): which backbone an RFR checkpoint was made for, as the weights only
# tell the width; RAMIR_DINOV2 or --dino overrides the name.
_DINOV2_BY_WIDTH = {384: ("facebook/dinov2-small", 12), 768: ("facebook/dinov2-base", 12),
                    1024: ("facebook/dinov2-large", 24), 1536: ("facebook/dinov2-giant", 40)}


def _detect_rfr(sd: Mapping[str, torch.Tensor]) -> NetworkSpec:
    """RFR: the RAM-Restormer reading of the shared keys, the DINOv2 width from the adapter."""
    from ramir.archs.rfr import RFR_PREFIXES, default_dino_layers

    base = _detect_restormer({k: v for k, v in sd.items() if not k.startswith(RFR_PREFIXES)})
    dino_dim = _shape(sd, "dr_adaptation1.adaptation.0.weight", "RFR")[1]
    if dino_dim not in _DINOV2_BY_WIDTH:
        raise CheckpointError(f"RFR checkpoint for a {dino_dim}-wide backbone: not a DINOv2 width "
                              f"({', '.join(map(str, _DINOV2_BY_WIDTH))})")
    name, depth = _DINOV2_BY_WIDTH[dino_dim]
    kwargs = dict(base.kwargs, dino_model=name, dino_dim=dino_dim,
                  dino_layers=list(default_dino_layers(depth)))
    gate_hidden = _shape(sd, "dino_fusion_deep.gate_network.2.weight", "RFR")[0]
    if gate_hidden != 512:
        kwargs["gate_hidden"] = gate_hidden
    return NetworkSpec("rfr", kwargs)


_RESTORMER_DEFAULTS: dict[str, Any] = dict(
    inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
)


def _detect_restormer(sd: Mapping[str, torch.Tensor]) -> NetworkSpec:
    """RAM-Restormer (``AdaSAM_RestormerWoskip``): the PromptIR reading of shapes, without prompts.

    The published Restormer has the same keys and shapes but adds its input to the output; its
    weights load here and then run without that skip (keys cannot tell the two apart)."""
    arch = "RAM-Restormer"
    dim, inp = _shape(sd, "patch_embed.proj.weight", arch)[:2]
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    pairs = sorted({tuple(v.shape[:2]) for k, v in sd.items() if k.endswith(".ffn.project_out.weight")})
    if not pairs:
        raise CheckpointError("looks like RAM-Restormer but has no '*.ffn.project_out.weight'")
    found: dict[str, Any] = dict(
        inp_channels=inp, out_channels=_shape(sd, "output.weight", arch)[0], dim=dim,
        num_blocks=[len(_indices(sd, rf"^{name}\.(\d+)\.", arch)) for name in levels],
        num_refinement_blocks=len(_indices(sd, r"^refinement\.(\d+)\.", arch)),
        heads=[_shape(sd, f"{name}.0.attn.temperature", arch)[0] for name in levels],
        ffn_expansion_factor=_expansion_factor(pairs), bias="encoder_level1.0.attn.qkv.bias" in sd,
        LayerNorm_type="WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
    )
    return NetworkSpec("restormer", {k: v for k, v in found.items() if v != _RESTORMER_DEFAULTS[k]})


def _looks_like_nafnet(sd: Mapping[str, torch.Tensor]) -> bool:
    return "intro.weight" in sd and "ending.weight" in sd and any(k.startswith("downs.") for k in sd)


def _detect_nafnet(sd: Mapping[str, torch.Tensor]) -> NetworkSpec:
    """NAFNet: width from ``intro``, blocks per level from the block indices, expansions from conv shapes."""
    width, in_chans = _shape(sd, "intro.weight", "NAFNet")[:2]
    levels = _indices(sd, r"downs\.(\d+)\.", "NAFNet")  # every level has one, even without blocks

    def blocks(prefix: str, level: int | None = None) -> int:
        head = f"{prefix}.{level}." if level is not None else f"{prefix}."
        return len({k[len(head):].split(".")[0] for k in sd if k.startswith(head) and k.endswith(".beta")})

    enc = [blocks("encoders", i) for i in range(len(levels))]
    dec = [blocks("decoders", i) for i in range(len(levels))]
    first = next((k[: -len(".norm1.weight")] for k in sd if k.endswith(".norm1.weight")), None)
    if first is None:
        raise CheckpointError("looks like NAFNet but has no blocks (no '*.norm1.weight')")
    ch = _shape(sd, f"{first}.norm1.weight", "NAFNet")[0]
    kwargs: dict[str, Any] = {
        "in_chans": in_chans, "width": width, "enc_blocks": enc, "middle_blocks": blocks("middle"),
        "dec_blocks": dec, "dw_expand": _shape(sd, f"{first}.conv1.weight", "NAFNet")[0] // ch,
        "ffn_expand": _shape(sd, f"{first}.conv4.weight", "NAFNet")[0] // ch,
    }
    return NetworkSpec("nafnet", kwargs)


_DETECTORS = (
    ("swinir", _looks_like_swinir, _detect_swinir),
    ("rfr", _looks_like_rfr, _detect_rfr),
    ("restormer", _looks_like_restormer, _detect_restormer),  # before PromptIR, whose keys it shares
    ("promptir", _looks_like_promptir, _detect_promptir),
    ("nafnet", _looks_like_nafnet, _detect_nafnet),
)


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> NetworkSpec:
    """Recognise RAM-SwinIR, PromptIR, RAM-Restormer or NAFNet from key names; read the constructor
    arguments from shapes."""
    sd = _strip_prefix(state_dict, "module.")
    for _arch, looks_like, detect in _DETECTORS:
        if looks_like(sd):
            return detect(sd)
    expected = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in _EXPECTED_KEYS.items())
    raise CheckpointError(
        f"unknown network: expected keys such as ({expected}); found {_fmt_keys(list(sd)) or 'no keys'}"
    )


# --------------------------------------------------------------------------------------------------
# building and strict loading


def _build(spec: NetworkSpec) -> nn.Module:
    try:
        return build_network(spec.arch, **spec.kwargs)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint names an unknown architecture: {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot build {spec.arch} with the checkpoint's config {spec.kwargs}: {exc}"
        ) from None


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "") -> None:
    """``load_state_dict(strict=True)``, but one error line naming missing, unexpected, mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file != network): {_fmt_keys(mismatched)}")
    if problems:
        what = what or type(model).__name__
        raise CheckpointError(f"checkpoint does not match {what}: " + "; ".join(problems))
    model.load_state_dict(dict(state_dict), strict=True)


def load_network(
    path_or_state_dict: Any, prefer_ema: bool = True, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the network of a checkpoint (recorded or detected spec), load it strictly, eval mode."""
    ckpt = load_checkpoint(path_or_state_dict, prefer_ema=prefer_ema)
    spec = ckpt.spec or detect_architecture(ckpt.state_dict)
    model = _build(spec)
    load_state_dict_strict(model, ckpt.state_dict, f"{spec.arch}({_short_kwargs(spec.kwargs)})")
    return model.to(device).eval()


def _short_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


# --------------------------------------------------------------------------------------------------
# writing


def _unwrap(model: nn.Module) -> nn.Module:
    """The network itself: look through DDP's ``.module`` and ImageSpaceModel's ``.network`` wrappers."""
    while getattr(model, "ramir_spec", None) is None:
        inner = getattr(model, "module", None)  # DistributedDataParallel / DataParallel
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "network", None)
            if not isinstance(inner, nn.Module) or network_spec(inner) is None:
                break  # a plain model: save it as it is
        model = inner
    return model


def _prepare(sd: Mapping[str, Any], prefix: str, seen: set[int], what: str) -> StateDict:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses them)."""
    out: StateDict = {}
    for key, value in _strip_prefix(_as_state_dict(sd, what), "module.").items():
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size()
        if shared and t.numel() > 0:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[f"{prefix}.{key}"] = t
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    *,
    spec: NetworkSpec | None = None,
    stage: str = "",
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ramir's single-file format (safetensors + JSON metadata), atomically.

    ``spec`` defaults to the one recorded on the model (``ramir.archs.network_spec``); a bare state
    dict without a spec is allowed and its architecture is then detected when loading.
    """
    from safetensors.torch import save_file

    from ramir import __version__

    if isinstance(model_or_state_dict, nn.Module):
        net = _unwrap(model_or_state_dict)
        spec = spec or network_spec(net)
        state_dict: Mapping[str, Any] = net.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state_dict = model_or_state_dict
    else:
        kind = type(model_or_state_dict).__name__
        raise TypeError(f"save_checkpoint needs a module or a state dict, not {kind}")
    if isinstance(ema_state_dict, nn.Module):
        ema_state_dict = _unwrap(ema_state_dict).state_dict()
    seen: set[int] = set()
    tensors = _prepare(state_dict, PARAMS, seen, "state dict")
    if ema_state_dict is not None:
        tensors.update(_prepare(ema_state_dict, PARAMS_EMA, seen, "EMA state dict"))
    provenance = {
        **(metadata or {}),
        "ramir_version": __version__,
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    header = {
        "ramir_format": FORMAT_VERSION,
        "arch": spec.arch if spec else "",
        "config": json.dumps(spec.kwargs if spec else {}, default=str),
        "stage": stage,
        "provenance": json.dumps(provenance, default=str),
        "has_ema": "true" if ema_state_dict is not None else "false",
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


# --------------------------------------------------------------------------------------------------
# describing


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file without reading its tensors (cheap listing of many files)."""
    path = Path(path)
    _check_path(path)
    if _sniff(path) != "safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is a truncated or corrupt safetensors file ({exc})") from None


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ramir info`` prints: architecture, config, stage, format, sizes, EMA and metadata."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    spec = ckpt.spec or detect_architecture(ckpt.state_dict)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in ckpt.state_dict.values()})
    return {
        "path": str(path),
        "format": ckpt.source_format,
        "arch": spec.arch,
        "model_name": registered_name(spec),
        "config": spec.kwargs,
        "stage": ckpt.stage,
        "parameters": parameter_count(ckpt.state_dict),
        "tensors": len(ckpt.state_dict),
        "dtypes": dtypes,
        "has_ema": ckpt.ema_state_dict is not None,
        "size_bytes": path.stat().st_size,
        "dropped_keys": ckpt.dropped_keys,
        "metadata": ckpt.metadata,
    }


# --------------------------------------------------------------------------------------------------
# where checkpoints live


def ramir_home() -> Path:
    """``$RAMIR_HOME`` or ``~/.cache/ramir``: where downloaded and trained checkpoints are looked for."""
    return Path(os.environ.get("RAMIR_HOME") or Path.home() / ".cache" / "ramir").expanduser()


def packaged_checkpoints() -> list[Path]:
    """The default model(s) shipped inside the package (``ramir/weights/*.safetensors``)."""
    return sorted((Path(__file__).parent / "weights").glob("*.safetensors"))


def find_checkpoints(folder: str | os.PathLike | None = None) -> list[Path]:
    """``*.safetensors`` and ``*.pth`` files directly in ``folder`` (default :func:`ramir_home`)."""
    folder = Path(folder) if folder is not None else ramir_home()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pth"))
