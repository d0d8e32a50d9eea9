"""``ramir data verify CONFIG``: check the data folders of a recipe before a long run starts.

For ``data.train`` and ``data.val`` it lists every source with its image count, the pairing result and
the problems found (missing folder, no images, unmatched names, unreadable files, size mismatches).
Exit status 0 when all is well, 1 when a problem was found, 2 when the recipe itself is invalid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ramir.errors import ConfigError, reject_unknown_keys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check the datasets of a recipe", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check every source of data.train and data.val")
    verify.add_argument("config", type=Path, help="recipe YAML with a data: section")
    verify.add_argument(
        "--no-decode", action="store_true", help="check names and counts only, do not open files"
    )
    verify.set_defaults(func=run)


def load_data_section(path: Path) -> dict:
    """The ``data:`` mapping of a recipe file, with what it inherits through ``_base_``."""
    from ramir.training.config import read_recipe_dict

    cfg = read_recipe_dict(path)  # FileNotFoundError -> one line from the CLI hub
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise ConfigError(f"{path}: no 'data:' section")
    data = cfg["data"]
    reject_unknown_keys(data, {"train", "val"}, f"{path}: data")
    if not data:
        raise ConfigError(f"{path}: data: needs 'train' and/or 'val'")
    return data


def run(args: argparse.Namespace) -> int:
    from ramir.data.recipe import parse_split, source_reports

    data = load_data_section(args.config)
    base_dir = args.config.resolve().parent
    # validate the whole section first: a typo is reported before any folder is scanned
    splits = {
        name: parse_split(data[name], train=name == "train", base_dir=base_dir, where=f"data.{name}")
        for name in ("train", "val")
        if name in data
    }
    n_problems = 0
    for name, split in splits.items():
        print(f"data.{name}:")
        for rep in source_reports(split, base_dir=base_dir, decode=not args.no_decode):
            status = "ok" if not rep.problems else f"{len(rep.problems)} problem(s)"
            roots = ", ".join(str(r) for r in rep.roots)
            print(f"  {rep.name} [{rep.type}] {roots}: {rep.count} items, {status}")
            if rep.pairing:
                print(f"    {rep.pairing}")
            for p in rep.problems:
                print(f"    problem: {p}")
            n_problems += len(rep.problems)
    print("all sources ok" if n_problems == 0 else f"{n_problems} problem(s) found")
    return 1 if n_problems else 0
