"""The golden and equivalence comparisons' errors under each instruction set and thread count.

Every golden or equivalence test (``@pytest.mark.golden``) checks its errors through ``within(comparison,
error, bound)`` (``tests/conftest.py``), which also appends them to ``$RAMIR_GOLDEN_LOG``. This script runs
``pytest -m golden`` once per setting — torch's kernels forced with ``ATEN_CPU_CAPABILITY`` (``default``,
``avx2``, and the machine's own) times 1 and 2 threads — and prints one row per comparison: the error
under each setting, the largest, the bound and the margin (bound / largest). Each bound in the tests is
the largest error measured so, times a margin written beside it; docs/robustness.md keeps the table.

    python -m benchmarks.golden_spread                      # 6 settings, about 6 x 2 minutes on 2 cores
    python -m benchmarks.golden_spread --capabilities avx2 --threads 1 -k rfr   # a part
    python -m benchmarks.golden_spread --json spread.json   # the numbers, for a later table

A setting whose tests fail is reported with its failures (an error above its bound is still recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATIVE = "native"  # ATEN_CPU_CAPABILITY unset: the best kernels torch finds for this CPU


def native_capability() -> str:
    """What torch picks here when not told (e.g. "avx512"), from a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip().lower()


def run_setting(capability: str, threads: int, select: str | None, log: Path) -> dict:
    """``pytest -m golden`` under one setting; the comparisons it logged, its outcome and its time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "RAMIR_TEST_THREADS": str(threads),
           "RAMIR_GOLDEN_LOG": str(log)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != NATIVE:
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "golden", "-p", "no:cacheprovider", "tests"]
    if select:
        cmd += ["-k", select]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    errors: dict[str, float] = {}
    bounds: dict[str, float] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            name = rec["comparison"]
            errors[name] = max(errors.get(name, 0.0), rec["error"])  # a comparison made twice: its worst
            bounds[name] = rec["bound"]
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED")]
    return {"errors": errors, "bounds": bounds, "summary": summary, "failed": failed,
            "returncode": out.returncode, "seconds": seconds}


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per comparison, one column per setting, then the largest, the bound, the margin."""
    settings = list(results)
    names: list[str] = []
    bounds: dict[str, float] = {}
    for res in results.values():
        for name in res["errors"]:
            if name not in names:
                names.append(name)
        bounds.update(res["bounds"])
    head = ["comparison", *settings, "largest", "bound", "margin"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        errs = [results[s]["errors"].get(name) for s in settings]
        seen = [e for e in errs if e is not None]
        worst = max(seen) if seen else float("nan")
        bound = bounds.get(name, float("nan"))
        margin = f"{bound / worst:.3g}x" if worst > 0 else "(all 0)"
        cells = ["—" if e is None else f"{e:.3g}" for e in errs]
        shown = name.replace("|", "\\|")  # max|y| inside a Markdown table
        lines.append(f"| {shown} | " + " | ".join(cells) + f" | {worst:.3g} | {bound:.3g} | {margin} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capabilities", nargs="+", default=["default", "avx2", NATIVE],
                        help=f"ATEN_CPU_CAPABILITY values ('{NATIVE}': unset); default: default avx2 native")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("-k", dest="select", help="pytest -k expression: a part of the golden tests")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    native = native_capability()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ramir-golden-") as tmp:
        for capability in args.capabilities:
            for threads in args.threads:
                label = f"{native if capability == NATIVE else capability}/{threads}t"
                res = run_setting(capability, threads, args.select, Path(tmp) / f"{len(results)}.jsonl")
                results[label] = res
                print(f"{label}: {res['summary']} ({res['seconds']:.0f} s)", file=sys.stderr, flush=True)
                for line in res["failed"]:
                    print(f"  {line}", file=sys.stderr)
    print(f"torch kernels native to this CPU: {native}; settings: capability/threads\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if any(r["returncode"] not in (0, 5) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
