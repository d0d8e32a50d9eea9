"""``ramir export``: a checkpoint to an ONNX graph on [0, 1] RGB images, verified against PyTorch."""

from __future__ import annotations

import argparse

from ramir.export import export_onnx


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fixed or dynamic tile size)",
                       description="Export a network to ONNX. The graph takes and returns RGB float32 "
                       "(N, 3, H, W) images in [0, 1]; it is checked against PyTorch with onnxruntime.")
    p.add_argument("checkpoint", help="checkpoint file (ramir .safetensors, reference .pth, bare state dict)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--tile", type=int, default=256, help="fixed input size (default 256)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic height/width (multiples of the network's window/stride)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--expert", metavar="NAME",
                   help="a routed network (the default model): export only this expert; without it the whole "
                   "model is written (router and experts as graphs, plus a JSON manifest of the routing)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoints import load_network
    from ramir.errors import RamirError, step

    with step(f"loading {args.checkpoint}"):
        network = load_network(args.checkpoint, prefer_ema=not args.raw)
    names = getattr(network, "expert_names", None)
    if names is not None and args.expert is None:
        return _export_whole(network, args)
    if names is not None:
        if args.expert not in names:
            raise RamirError(f"unknown expert {args.expert!r}: choose from {', '.join(names)}")
        network = network.experts[names.index(args.expert)]
    elif args.expert is not None:
        raise RamirError(f"{args.checkpoint} is not a routed network; --expert does not apply")
    with step(f"exporting to ONNX ({'dynamic sizes' if args.dynamic else f'{args.tile}x{args.tile}'})"):
        report = export_onnx(network, args.output, tile=args.tile, dynamic=args.dynamic, opset=args.opset,
                             verify=not args.no_verify, overwrite=args.overwrite)
    shape = "dynamic H, W" if report.dynamic else f"{report.tile}x{report.tile}"
    check = ("not verified (onnxruntime missing)" if report.max_abs_diff is None
             else f"max |onnx - torch| = {report.max_abs_diff:.2e}")
    print(f"wrote {report.path} ({shape}); {check}")
    return 0


def _export_whole(network, args: argparse.Namespace) -> int:
    """A routed model as graphs + manifest (ramir.export.export_routed), checked against PyTorch."""
    from ramir.errors import step
    from ramir.export import export_routed

    with step("exporting the routed model to ONNX (router and every expert, dynamic sizes)"):
        report = export_routed(network, args.output, opset=args.opset, verify=not args.no_verify,
                               overwrite=args.overwrite)
    for name, path in report.graphs.items():
        print(f"wrote {path} ({name})")
    print(f"wrote {report.manifest} (manifest: classes, experts, priors, thresholds, crop, padding)")
    if report.parity is not None:
        worst = max(report.parity.values(), default=0.0)
        print(f"checked on {report.checked} images (clean and every family): the same experts chosen on "
              f"{report.decisions_agree}, max |onnx - torch| = {worst:.2e}")
    return 0
