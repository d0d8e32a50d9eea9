"""``ramir models``: the registered network configurations and the checkpoints ramir can see.

Checkpoints are looked for in the package (the embedded default model) and in ``$RAMIR_HOME``
(default ``~/.cache/ramir``) or ``--dir``. Listing reads only safetensors headers, never whole files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ramir.errors import RamirError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="list network configurations and available checkpoints",
        description="List the registered network configurations and the checkpoints ramir can find.",
    )
    p.add_argument("--params", action="store_true",
                   help="build every configuration to count its parameters (slower)")
    p.add_argument("--dir", type=Path, default=None,
                   help="folder of checkpoints to list (default: $RAMIR_HOME or ~/.cache/ramir)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def count_parameters(name: str) -> int:
    """Parameters of a registered configuration; built on the meta device when the network allows it."""
    import torch

    from ramir.archs import create_model

    try:
        with torch.device("meta"):  # no memory, no initialisation: PromptIR builds in a blink
            model = create_model(name)
    except (NotImplementedError, RuntimeError):  # a constructor that needs real values (SwinIR's masks)
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def _configs(with_params: bool) -> list[dict[str, Any]]:
    from ramir.archs import MODEL_CONFIGS

    rows, first_name = [], {}
    for name, cfg in MODEL_CONFIGS.items():
        alias_of = first_name.setdefault(id(cfg), name)
        rows.append({
            "name": name, "arch": cfg.arch, "description": cfg.description,
            "alias_of": None if alias_of == name else alias_of,
            "parameters": count_parameters(name) if with_params and alias_of == name else None,
        })
    for row in rows:  # aliases share their target's count
        if row["alias_of"] and with_params:
            row["parameters"] = next(r["parameters"] for r in rows if r["name"] == row["alias_of"])
    return rows


def _peek(path: Path) -> dict[str, Any]:
    """A one-line summary of a checkpoint file from its header only (never loads .pth files)."""
    from ramir.checkpoints import read_header

    row: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    if path.suffix != ".safetensors":
        row["note"] = "PyTorch file (see `ramir info`)"
        return row
    try:
        header = read_header(path)
    except RamirError as exc:
        row["note"] = f"unreadable: {exc}"
        return row
    if "ramir_format" in header:
        row.update(arch=header.get("arch") or "detected on load", stage=header.get("stage", ""),
                   has_ema=header.get("has_ema") == "true")
    else:
        row["note"] = "plain safetensors state dict"
    return row


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoints import find_checkpoints, packaged_checkpoints, ramir_home

    folder = args.dir if args.dir is not None else ramir_home()
    configs = _configs(args.params)
    packaged = [_peek(p) for p in packaged_checkpoints()]
    found = [_peek(p) for p in find_checkpoints(folder)]
    if args.json:
        print(json.dumps({"configs": configs, "packaged": packaged, "folder": str(folder),
                          "checkpoints": found}, indent=2))
        return 0

    print("Network configurations (ramir.create_model / --model):")
    width = max(len(r["name"]) for r in configs)
    for r in configs:
        count = f"{r['parameters']:>12,}" if r["parameters"] is not None else ""
        text = f"alias of {r['alias_of']}" if r["alias_of"] else r["description"]
        print(f"  {r['name']:<{width}}  {r['arch']:<9}{count}  {text}".rstrip())
    if not args.params:
        print("  (--params counts the parameters of each configuration)")

    print("\nEmbedded default model:")
    if not packaged:
        print("  no embedded default model yet")
    for row in packaged:
        print("  " + _describe_row(row))

    print(f"\nCheckpoints in {folder}:")
    if not found:
        print("  none (*.safetensors or *.pth)")
    for row in found:
        print("  " + _describe_row(row))
    return 0


def _describe_row(row: dict[str, Any]) -> str:
    parts = [Path(row["path"]).name, _size(row["size_bytes"])]
    if "arch" in row:
        parts.append(row["arch"])
        if row.get("stage"):
            parts.append(f"stage={row['stage']}")
        if row.get("has_ema"):
            parts.append("with EMA")
    if row.get("note"):
        parts.append(row["note"])
    return "  ".join(parts)
