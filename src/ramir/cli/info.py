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
    lines += _routing(info)
    if info["dropped_keys"]:
        lines.append(("dropped", ", ".join(info["dropped_keys"])))
    for key, value in info["metadata"].items():
        lines.append((f"meta.{key}", value if isinstance(value, str) else json.dumps(value)))
    width = max(len(k) for k, _ in lines)
    return [f"{k + ':':<{width + 1}} {v}" for k, v in lines]


def _routing(info: dict) -> list[tuple[str, str]]:
    """A routed checkpoint's decision rules, in the words ``ramir restore -v`` uses."""
    cfg = info["config"] or {}
    if "classes" not in cfg or "class_to_expert" not in cfg:  # not a routed checkpoint
        return []
    experts, mapping = cfg.get("experts", []), cfg.get("class_to_expert", [])
    routes = ", ".join(
        f"{c} -> {experts[k] if k >= 0 else 'left unchanged'}" for c, k in zip(cfg["classes"], mapping)
    )
    bias = cfg.get("class_bias") or {}
    return [
        ("classes", ", ".join(cfg["classes"])),
        ("experts", ", ".join(experts) + "  (ramir restore --expert NAME[,NAME] | none)"),
        ("routes", routes),
        ("priors", ", ".join(f"{k} {v:+g}" for k, v in bias.items() if v) or "none"),
        ("keep threshold", f"{cfg.get('keep_threshold', 0.0):g} (the clean class needs this probability"
                           + (f"; below it only {', '.join(cfg['doubt_experts'])} may restore"
                              if cfg.get("doubt_experts") is not None else "")
                           + (f"; below it an expert needs p >= {cfg['doubt_floor']:g}, else it is left"
                              if cfg.get("doubt_floor") else "") + ")"),
        ("chain", f"at most {cfg.get('max_steps', 1)} step(s); a later step needs p >= "
                  f"{cfg.get('chain_threshold', 0.0):g}"
                  + "".join(f"; {k} only after {', '.join(v) or 'nothing'}"
                            for k, v in (cfg.get("chain_after") or {}).items())),
        ("router crop", f"{cfg.get('route_size', 512)} px (centre)"),
        ("self-ensemble", "any views (ramir restore --ensemble N)" if not cfg.get("ensemble_views") else
                          "; ".join(f"{k} {'+'.join(v)}" for k, v in cfg["ensemble_views"].items())
                          + "; the others any (ramir restore --ensemble N)"),
        ("large photos", f"second look at a {cfg['scale_check']}-px short side (blur and motion struck "
                         f"below p {cfg.get('scale_threshold', 0.5):g} there)" if cfg.get("scale_check")
                         else "off"),
    ]


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
