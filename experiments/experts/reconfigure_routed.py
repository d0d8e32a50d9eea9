"""Write a routed checkpoint with other settings or experts, e.g. a chain of two steps, a new expert, fp16.

    python experiments/experts/reconfigure_routed.py src/ramir/weights/default.safetensors \\
        runs/routed_chain2.safetensors --set max_steps=2 --set chain_threshold=0.5 \\
        --expert deblur=runs/expert_deblur_cycle4/final.safetensors --fp16

``--set`` takes the routed network's settings (max_steps, chain_threshold, keep_threshold,
doubt_experts as a JSON list, route_size, class_bias.NAME); ``--expert NAME=CKPT`` replaces one expert's
weights by a checkpoint's EMA weights (a grown expert, grow_expert.py, keeps its own size through the
routed network's ``expert_overrides``); ``--fp16`` stores floating tensors in half precision (loading
upcasts them: the embedded file halves, and outputs move by far less than 0.05 dB,
benchmarks/fp16_weights.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from ramir.archs import build_network  # noqa: E402
from ramir.checkpoints import load_checkpoint, load_state_dict_strict, save_checkpoint  # noqa: E402


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def routed_checkpoint(path: Path):
    """The checkpoint at ``path``, which must hold a routed network."""
    ckpt = load_checkpoint(path)
    if ckpt.spec is None or ckpt.spec.arch != "routed":
        raise SystemExit(f"{path}: not a routed checkpoint")
    return ckpt


def routed_network(ckpt, config: dict, replaced: tuple[str, ...] = ()) -> torch.nn.Module:
    """The routed network of ``config`` (the checkpoint's settings, or changed ones) with the
    checkpoint's weights, upcast to fp32; the experts named in ``replaced`` are left for the caller to
    load (their size may differ from the checkpoint's)."""
    net = build_network("routed", **config)
    skip = tuple(f"experts.{config['experts'].index(n)}." for n in replaced)
    state = {k: v.float() for k, v in ckpt.state_dict.items() if not k.startswith(skip)}
    own = {k: v for k, v in net.state_dict().items() if k.startswith(skip)}
    load_state_dict_strict(net, {**own, **state}, "routed")
    return net


def overrides_for(config: dict, name: str, expert) -> dict:
    """``config``'s expert_overrides with expert ``name`` built as ``expert`` (a checkpoint) was: a
    grown expert (grow_expert.py) keeps its own size, the others the shared one."""
    overrides = {k: dict(v) for k, v in (config.get("expert_overrides") or {}).items()}
    if expert.spec is None or expert.spec.arch != config.get("expert_arch", "nafnet"):
        return overrides  # a checkpoint without its config: loaded into the shared size, strictly
    shared = dict(config.get("expert_kwargs") or {})
    own = {k: v for k, v in expert.spec.kwargs.items() if shared.get(k) != v}
    if own:
        overrides[name] = own
    else:
        overrides.pop(name, None)
    return overrides


def save_routed(out: Path, net: torch.nn.Module, metadata: dict, *, fp16: bool) -> None:
    """Write ``net`` with ``metadata`` (the source's version stamps dropped: save_checkpoint writes its
    own), floating tensors in fp16 if asked."""
    from ramir.archs import network_spec

    state = net.state_dict()
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {k: v for k, v in metadata.items() if k not in ("ramir_version", "torch_version", "date")}
    meta["weights_dtype"] = "float16" if fp16 else "float32"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, state, spec=network_spec(net), stage="routed", metadata=meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--expert", action="append", default=[], metavar="NAME=CKPT")
    ap.add_argument("--fp16", action="store_true", help="store floating tensors as fp16")
    args = ap.parse_args(argv)

    ckpt = routed_checkpoint(args.source)
    config = dict(ckpt.spec.kwargs)
    for item in args.set:
        key, _, text = item.partition("=")
        if key.startswith("class_bias."):
            config["class_bias"] = {**config.get("class_bias", {}), key.split(".", 1)[1]: float(text)}
        else:
            config[key] = _value(text)
    experts = {}
    for item in args.expert:
        name, _, path = item.partition("=")
        if name not in config["experts"]:
            raise SystemExit(f"--expert: no expert {name!r} (experts: {', '.join(config['experts'])})")
        experts[name] = (path, load_checkpoint(path, prefer_ema=True))
        config["expert_overrides"] = overrides_for(config, name, experts[name][1])
    if not config.get("expert_overrides"):
        config.pop("expert_overrides", None)
    net = routed_network(ckpt, config, tuple(experts))
    replaced = {}
    for name, (path, expert) in experts.items():
        load_state_dict_strict(net.experts[net.expert_names.index(name)], expert.state_dict, name)
        replaced[name] = str(Path(path))
    experts_meta = dict(ckpt.metadata.get("experts") or {})
    experts_meta.update(replaced)  # where each expert's weights came from, the replaced ones included
    meta = {**ckpt.metadata, "experts": experts_meta, "reconfigured_from": str(args.source),
            "replaced_experts": replaced,
            "settings": {k: config[k] for k in config if k not in ("expert_kwargs",)}}
    save_routed(args.out, net, meta, fp16=args.fp16)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.2f} MiB; settings {json.dumps(meta['settings'])}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
