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
import os
import pickle
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir.archs import (
    MODEL_CONFIGS,
    NetworkSpec,
    architecture_of,
    architectures,
    build_network,
    network_spec,
)
from ramir.errors import CheckpointError
from ramir.fileio import atomic_path
from ramir.layers import unwrap

FORMAT_VERSION = "1"
PARAMS, PARAMS_EMA = "params", "params_ema"
SOURCE_FORMATS = ("ramir", "reference", "lightning", "bare")

# State-dict entries that are buffers (constants rebuilt by the constructor), not parameters.
_BUFFER_SUFFIXES = (".relative_position_index", ".attn_mask")

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


def _drop_unused_keys(sd: StateDict) -> tuple[StateDict, list[str], str]:
    """Keys that the recognised family's original code defines but never uses (the original
    PromptIR's convs), with the descriptor's reason; nothing for any other state dict."""
    for arch in architectures():
        if arch.unused_keys is not None and arch.looks_like is not None and arch.looks_like(sd):
            dropped = [k for k in sd if arch.unused_keys.match(k)]
            return {k: v for k, v in sd.items() if k not in dropped}, dropped, arch.unused_keys_reason
    return sd, [], ""


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

    raw, dropped, why = _drop_unused_keys(_strip_prefix(unpacked["raw"], "module."))
    ema = unpacked["ema"]
    if ema is not None:
        ema, dropped_ema, why_ema = _drop_unused_keys(_strip_prefix(ema, "module."))
        dropped, why = sorted(set(dropped) | set(dropped_ema)), why or why_ema
    if not raw:
        raise CheckpointError(f"{where} holds no tensors")
    if dropped:
        warnings.warn(f"{where}: dropped {len(dropped)} keys {why}: {', '.join(dropped)}", stacklevel=2)
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


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> NetworkSpec:
    """Recognise the network family from key names (each architecture's descriptor, in registration
    order) and read its constructor arguments from shapes."""
    sd = _strip_prefix(state_dict, "module.")
    known = architectures()
    for arch in known:
        if arch.looks_like is not None and arch.detect is not None and arch.looks_like(sd):
            return NetworkSpec(arch.name, arch.detect(sd))
    expected = "; ".join(f"{a.title}: {', '.join(a.expected_keys)}" for a in known if a.expected_keys)
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


def load_state_dict_adopting(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = ""
) -> None:
    """:func:`load_state_dict_strict`, after the network's family has completed a state dict of
    another family it starts from (RAM++: an RFR network from a RAM-Restormer checkpoint)."""
    arch = architecture_of(model)
    adopted = arch.adopt_state(model, state_dict) if arch is not None and arch.adopt_state else None
    load_state_dict_strict(model, state_dict if adopted is None else adopted, what)


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

    from ramir._version import __version__

    if isinstance(model_or_state_dict, nn.Module):
        net = unwrap(model_or_state_dict)
        spec = spec or network_spec(net)
        state_dict: Mapping[str, Any] = net.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state_dict = model_or_state_dict
    else:
        kind = type(model_or_state_dict).__name__
        raise TypeError(f"save_checkpoint needs a module or a state dict, not {kind}")
    if isinstance(ema_state_dict, nn.Module):
        ema_state_dict = unwrap(ema_state_dict).state_dict()
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
