"""``ramir demo`` from the command line: the seven cases written and consistent, bad input one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ramir
from ramir.cli import main
from ramir.demo import CASES
from ramir.inference import NO_DEFAULT_MODEL
from ramir.metrics import psnr

ROW = re.compile(r"^\| (\w+) \| ([\w+]+) \| ([\d.]+) \| ([\d.]+) \| ([\w+-]+) \| ([\d.]+) \|$")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A small NAFNet checkpoint with every block active (non-zero residual scales)."""
    from ramir.checkpoints import save_checkpoint

    torch.manual_seed(0)
    net = ramir.create_model("nafnet-s", width=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, net)
    return str(path)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


def _table_rows(text: str) -> list[tuple[str, str, float, float]]:
    rows = [ROW.match(line) for line in text.splitlines()]
    return [(m[1], m[2], float(m[3]), float(m[4]), m[5]) for m in rows if m]


def test_demo_writes_every_case_with_a_consistent_table(tmp_path, capsys, tiny_model):
    from skimage import data

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", tiny_model, "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert f"restored {len(CASES)} images into {out}/" in stdout
    names = [case[0] for case in CASES]
    expected = {f"{n}_{part}.png" for n in names for part in ("input", "restored", "compare")}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected | {"README.md"})

    readme = (out / "README.md").read_text()
    rows = _table_rows(readme)
    assert rows == _table_rows(stdout) and [r[0] for r in rows] == names
    for case, (_, table_kind, psnr_in, psnr_out, applied) in zip(CASES, rows, strict=True):
        assert applied == "-"  # a plain network: no routing to report
        name, photo, kind, _level, _seed = case
        assert table_kind == kind
        clean = getattr(data, photo)()[..., :3]  # the bundled photos used are all RGB
        degraded, restored = _png(out / f"{name}_input.png"), _png(out / f"{name}_restored.png")
        compare = _png(out / f"{name}_compare.png")
        h, w = clean.shape[:2]
        assert degraded.shape == restored.shape == clean.shape
        assert compare.shape == (h, 2 * w + 4, 3)  # before | grey separator | after
        # the pictures are what the table measured: PSNR of the written files against the photo
        assert psnr(degraded, clean) == pytest.approx(psnr_in, abs=0.006), name
        assert psnr(restored, clean) == pytest.approx(psnr_out, abs=0.006), name
        assert not np.array_equal(degraded, clean)  # it was degraded
        assert not np.array_equal(restored, degraded)  # and went through the network
        left, right = compare[:, :w].astype(int), compare[:, w + 4 :].astype(int)
        assert np.abs(left - degraded).max() <= 1 and np.abs(right - restored).max() <= 1


def test_demo_bad_input_is_one_line_and_nonzero(tmp_path, capsys, tiny_model, no_default_model):
    def run(*argv: str) -> tuple[int, list[str]]:
        code = main(["demo", *argv])
        return code, capsys.readouterr().err.strip().splitlines()

    # no --model in a build without embedded weights
    code, err = run("--out", str(tmp_path / "a"))
    assert code == 2 and err == [f"ramir: error: {NO_DEFAULT_MODEL}"]
    # a checkpoint that does not exist
    code, err = run("--out", str(tmp_path / "b"), "--model", str(tmp_path / "missing.safetensors"))
    assert code == 2 and len(err) == 1 and err[0].startswith("ramir: error: no such checkpoint file")
    # a file that is not a checkpoint
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    code, err = run("--out", str(tmp_path / "c"), "--model", str(tmp_path / "bad.safetensors"))
    assert code != 0 and len(err) == 1 and err[0].startswith("ramir: error: ") and "bad.safetensors" in err[0]
    # the output folder is a file
    (tmp_path / "taken").write_text("")
    code, err = run("--out", str(tmp_path / "taken"), "--model", tiny_model, "--device", "cpu")
    taken = tmp_path / "taken"
    expected = f"ramir: error: --out {taken}: is a file; name a folder for the demo's pictures"
    assert code == 2 and err == [expected]
    # nothing was written for any failed run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "taken"]


def test_demo_entry_point_fails_cleanly(tmp_path):
    """The installed command in a fresh process: exit status 2 and one line on stderr, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ramir", "demo", "--out", "o", "--model", "missing.safetensors",
         "--threads", "1"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ramir: error: no such checkpoint file")
    assert proc.stdout == "" and not (tmp_path / "o").exists()
