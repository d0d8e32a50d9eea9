"""``ramir info CKPT``: what a checkpoint holds (architecture, config, stage, parameters, provenance).

Reads ramir ``.safetensors`` files, the reference's ``.pth`` (``params``/``params_ema``), PromptIR's
Lightning checkpoints and bare state dicts, without ever executing pickled code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info", help="describe a checkpoint file",
        description="Describe a checkpoint: architecture and config (recorded or detected from its "
                    "keys), training stage, parameters, EMA, size and provenance metadata.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help=".safetensors or .pth file")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=run)


def _human(info: dict) -> list[str]:
    name = f" ({info['model_name']})" if info["model_name"] else ""
    lines = [
        ("path", info["path"]),
        ("format", info["format"]),
        ("arch", f"{info['arch']}{name}"),
        ("config", json.dumps(info["config"])),
        ("stage", info["stage"] or "-"),
        ("parameters", f"{info['parameters']:,}"),
        ("tensors", f"{info['tensors']} ({', '.join(info['dtypes'])})"),
        ("EMA", "yes (loaded by default)" if info["has_ema"] else "no"),
        ("size", f"{info['size_bytes'] / 2**20:.2f} MiB"),
    ]
    if info["dropped_keys"]:
        lines.append(("dropped", ", ".join(info["dropped_keys"])))
    for key, value in info["metadata"].items():
        lines.append((f"meta.{key}", value if isinstance(value, str) else json.dumps(value)))
    width = max(len(k) for k, _ in lines)
    return [f"{k + ':':<{width + 1}} {v}" for k, v in lines]


def run(args: argparse.Namespace) -> int:
    import warnings

    from ramir.checkpoints import describe_checkpoint

    with warnings.catch_warnings():  # dropped keys are part of the description itself
        warnings.simplefilter("ignore")
        info = describe_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(_human(info)))
    return 0
