"""One entry point for every benchmark (``make bench`` / ``python -m benchmarks``).

Runs the scripts below one after another (each in its own process, so peak-RSS figures are their own),
prints their tables and writes them, with the exact commands, into ``docs/performance.md`` between the
markers ``<!-- benchmarks: begin -->`` and ``<!-- benchmarks: end -->`` (appended when the page has none),
so the hand-written sections of the page survive a run. Each part's section carries its own command and
time: ``--only`` replaces the sections of the parts it runs and keeps the others (a full run on 2 cores
takes hours, so it can be done part by part). Benchmark an idle machine: on 2 cores, anything else
running distorts the figures badly.

    python -m benchmarks                 # everything (hours on 2 CPU cores: the reference configs are big)
    python -m benchmarks --only forward  # one part: forward | mac | restore | train | backends
    python -m benchmarks --quick         # small settings, minutes: checks the harness, not the claims
    python -m benchmarks --only forward --repeats 2   # fewer timed repeats (forward, backends)
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys

from benchmarks.common import describe_machine
from ramir.fileio import atomic_write_bytes

DEFAULT_WEIGHTS = "src/ramir/weights/default.safetensors"  # the shipped model (run from the repository root)
BEGIN, END = "<!-- benchmarks: begin -->", "<!-- benchmarks: end -->"

# MAC batched at 8 only: about 9 minutes per setting on 2 cores (16 and 32 gave the same on ram-swinir-small)
FULL = {
    "forward": ["benchmarks.forward_bench", "--threads", "1", "2", "--straightforward"],
    "mac": ["benchmarks.mac_bench", "--model", "ram-swinir", "--steps", "200", "--batch-steps", "8"],
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


def split_parts(block: str) -> tuple[str, dict[str, str]]:
    """A report block -> (its head, {part: that part's section}); sections start with ``### part``."""
    head, *rest = block.split("\n### ")
    return head, {chunk.split("\n", 1)[0].strip(): "### " + chunk.rstrip() + "\n" for chunk in rest}


def merge_report(path: str, report: str) -> str:
    """The page at ``path`` with ``report`` between the markers.

    Part sections of the previous report that ``report`` does not have are kept (they say when they
    ran), so ``--only`` refreshes some parts without erasing the others; parts are kept in FULL's order.
    """
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        page = "# Performance\n"
    if BEGIN in page and END in page:
        before, rest = page.split(BEGIN, 1)
        old, after = rest.split(END, 1)
        after = after.lstrip("\n")
    else:
        before, old, after = page.rstrip("\n") + "\n\n", "", ""
    head, parts = split_parts(report.strip())
    parts = split_parts(old.strip())[1] | parts
    ordered = [parts[k] for k in FULL if k in parts] + [v for k, v in parts.items() if k not in FULL]
    block = "\n".join([head.rstrip() + "\n", *ordered])
    return f"{before}{BEGIN}\n{block.rstrip()}\n{END}\n{after}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(FULL), default=list(FULL))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="docs/performance.md", help="Markdown report ('-' for none)")
    p.add_argument("--repeats", type=int, help="timed repeats of the forward and backends parts")
    args = p.parse_args(argv)

    plan = dict(QUICK if args.quick else FULL)
    if args.repeats:
        for part in ("forward", "backends"):
            plan[part] = [a for a in plan[part] if a != "--repeats"] + ["--repeats", str(args.repeats)]
    invocation = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    sections = [
        "## Benchmark tables\n",
        "Written by `python -m benchmarks`; each part says which invocation wrote it and when.\n",
        f"{describe_machine()}.\n",
    ]
    failed = False
    for part in args.only:
        cmd = [sys.executable, "-m", *plan[part]]
        shown = "python -m " + " ".join(shlex.quote(c) for c in plan[part])
        print(f"\n## {part}: {shown}", flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(run.stdout, end="")
        if run.returncode:
            failed = True
            print(run.stderr[-3000:], file=sys.stderr)
        body = run.stdout if not run.returncode else run.stdout + "\nFAILED:\n" + run.stderr[-3000:]
        when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        sections.append(f"### {part}\n\n`{shown}` (part of `{invocation}`, finished {when})\n\n"
                        f"```\n{body.rstrip()}\n```\n")
        if args.out != "-":  # after every part, so a run stopped half-way keeps what it measured
            atomic_write_bytes(args.out, merge_report(args.out, "\n".join(sections)).encode())
    if args.out != "-":
        print(f"\nwrote {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
