"""The package's layers hold (pyproject's import-linter contracts, also run by `make test`) and no
package imports in a circle, so each module can be read, tested and replaced from the bottom up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]

GRAPH = grimp.build_graph("ramir")
PACKAGES = sorted(m for m in GRAPH.modules if GRAPH.find_children(m))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles_among_the_modules_of(package):
    assert GRAPH.nominate_cycle_breakers(package) == set()


def test_import_contracts_are_kept():
    tool = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(tool), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and " 0 broken" in proc.stdout, proc.stdout[-2000:]
