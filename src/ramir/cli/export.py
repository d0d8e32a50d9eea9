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
                   help="a routed network (the default model) is exported one expert at a time: its name")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoints import load_network
    from ramir.errors import RamirError, step

    with step(f"loading {args.checkpoint}"):
        network = load_network(args.checkpoint, prefer_ema=not args.raw)
    names = getattr(network, "expert_names", None)
    if names is not None:  # routing is a per-image choice made in Python, not a graph: one expert per file
        if args.expert not in names:
            raise RamirError(f"{args.checkpoint} is a routed network; export one expert with --expert "
                             f"{'|'.join(names)} (the router chooses among them when restoring)")
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
