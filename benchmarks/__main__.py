"""One entry point for every benchmark (``make bench`` / ``python -m benchmarks``).

Runs the scripts below one after another (each in its own process, so peak-RSS figures are their own),
prints their tables and writes them, with the exact commands, into ``docs/performance.md`` between the
markers ``<!-- benchmarks: begin -->`` and ``<!-- benchmarks: end -->`` (appended when the page has none),
so the hand-written sections of the page survive a run. Benchmark an idle machine: on 2 cores, anything
else running distorts the figures badly.

    python -m benchmarks                 # everything (hours on 2 CPU cores: the reference configs are big)
    python -m benchmarks --only forward  # one part: forward | mac | restore | train | backends
    python -m benchmarks --quick         # small settings, minutes: checks the harness, not the claims
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys

import torch

from benchmarks.common import cpu_model, peak_gflops
from ramir.fileio import atomic_write_bytes

DEFAULT_WEIGHTS = "src/ramir/weights/default.safetensors"  # the shipped model (run from the repository root)
BEGIN, END = "<!-- benchmarks: begin -->", "<!-- benchmarks: end -->"

FULL = {
    "forward": ["benchmarks.forward_bench", "--threads", "1", "2", "--straightforward"],
    "mac": ["benchmarks.mac_bench", "--model", "ram-swinir", "--steps", "200"],
    "restore": ["benchmarks.tiled_restore_bench", DEFAULT_WEIGHTS, "--tile", "256", "512",
                "--size", "6000x4000"],
    "train": ["benchmarks.train_bench", "--threads", "1", "2"],
    "backends": ["benchmarks.backend_bench", "--threads", "1", "2"],
}
QUICK = {
    "forward": ["benchmarks.forward_bench", "--models", "nafnet-s", "ram-swinir-small", "--sizes", "256",
                "--threads", "1", "--repeats", "2", "--straightforward"],
    "mac": ["benchmarks.mac_bench", "--model", "ram-swinir-small", "--steps", "16", "--batch-steps", "8"],
    "restore": ["benchmarks.tiled_restore_bench", DEFAULT_WEIGHTS, "--tile", "256", "--size", "1500x1000"],
    "train": ["benchmarks.train_bench", "--threads", "1"],
    "backends": ["benchmarks.backend_bench", "--size", "256", "--threads", "1", "--repeats", "1"],
}


def merge_report(path: str, report: str) -> str:
    """The page at ``path`` with ``report`` between the markers (replacing the previous run's)."""
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        page = "# Performance\n"
    block = f"{BEGIN}\n{report.rstrip()}\n{END}\n"
    if BEGIN in page and END in page:
        head, rest = page.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1].lstrip("\n")
    return page.rstrip("\n") + "\n\n" + block


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(FULL), default=list(FULL))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="docs/performance.md", help="Markdown report ('-' for none)")
    args = p.parse_args()

    plan = QUICK if args.quick else FULL
    peak, how = peak_gflops(1)
    sections = [
        "## One run of every benchmark\n",
        f"Written by `python -m benchmarks {' '.join(sys.argv[1:])}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.\n",
        f"Machine: {cpu_model()}, torch {torch.__version__}. Peak fp32 assumed: {how} = {peak:.1f} GFLOP/s "
        "per core.\n",
    ]
    failed = False
    for i, part in enumerate(args.only):
        cmd = [sys.executable, "-m", *plan[part]]
        shown = "python -m " + " ".join(shlex.quote(c) for c in plan[part])
        print(f"\n## {part}: {shown}", flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(run.stdout, end="")
        if run.returncode:
            failed = True
            print(run.stderr[-3000:], file=sys.stderr)
        body = run.stdout if not run.returncode else run.stdout + "\nFAILED:\n" + run.stderr[-3000:]
        sections.append(f"### {part}\n\n`{shown}`\n\n```\n{body.rstrip()}\n```\n")
        if args.out != "-":  # after every part, so a run stopped half-way keeps what it measured
            pending = args.only[i + 1 :]
            note = f"Not run yet (the run was still going or was stopped): {', '.join(pending)}.\n"
            tail = [note] if pending else []
            atomic_write_bytes(args.out, merge_report(args.out, "\n".join(sections + tail)).encode())
    if args.out != "-":
        print(f"\nwrote {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
