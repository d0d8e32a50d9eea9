"""The GPU burst script (experiments/gpu_burst/burst.py) on the CPU: a check of the script, not a benchmark.

It runs the whole chain (probe, pre-training, MAC, fine-tuning, plain control) under ``torchrun`` with
one process in a gloo process group, as it runs under NCCL on a lent GPU, on a few generated images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]


def _packed_data(root: Path) -> Path:
    """The layout pack_data.py writes, with a few random images."""
    rng = np.random.default_rng(0)
    (root / "BSDS432_train").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(
            str(root / "BSDS432_train" / f"{i}.jpg"), rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
        )
    for role in ("input", "target"):
        (root / "Rain100H_train" / role).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
            cv2.imwrite(
                str(root / "Rain100H_train" / role / f"{i}.webp"), img, [cv2.IMWRITE_WEBP_QUALITY, 101]
            )
    (root / "kernels").mkdir()
    with h5py.File(root / "kernels" / "Levin09.mat", "w") as f:
        f.create_dataset("kernels", data=np.full((2, 5, 5), 1 / 25))
    return root


def _shipped_like_router(path: Path) -> Path:
    """A routed checkpoint with the shipped model's experts and classes (random weights)."""
    from ramir.archs import build_network
    from ramir.checkpoints import save_checkpoint

    classes = ["clean", "noise", "blur", "motion", "jpeg", "rain", "haze", "lowlight"]
    net = build_network(
        "routed",
        classes=classes,
        class_to_expert=[-1, 0, 1, 1, 2, 3, 4, 4],
        experts=["noise", "deblur", "jpeg", "rain", "tone"],
        expert_kwargs=dict(width=4, enc_blocks=[1], middle_blocks=1, dec_blocks=[1]),
    )
    save_checkpoint(path, net, stage="routed")
    return path


def test_burst_trains_every_expert_by_ram_and_plain_under_torchrun(tmp_path):
    data = _packed_data(tmp_path / "data")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        str(ROOT / "experiments" / "gpu_burst" / "burst.py"),
        "--smoke",
        "--minutes",
        "1",
        "--probe",
        "3",
        "--max-iterations",
        "4",
        "--data",
        str(data),
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
        "--router-from",
        str(_shipped_like_router(tmp_path / "shipped.safetensors")),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "burst.json").read_text())
    assert report["backend"] in ("gloo", "cpu:gloo") and report["world_size"] == 1
    assert report["iterations"] == dict.fromkeys(["noise", "deblur", "jpeg", "rain", "tone"], 4)
    assert all({"pretrain_s", "mac_s", "finetune_s", "plain_s"} <= set(v) for v in report["experts"].values())
    ranking = json.loads((tmp_path / "work" / "deblur_ranking_mac.json").read_text())
    assert len(ranking["ranking"]) == 89  # every attributable layer of nafnet-s was ranked
    from ramir.checkpoints import load_network

    for name in ("ram", "plain"):
        path = out / f"{name}.safetensors"
        assert path.stat().st_size < 16 * 2**20
        with safe_open(str(path), "pt") as f:
            assert json.loads(f.metadata()["provenance"])["chain"] == name
        net = load_network(path)
        assert net.expert_names == ["noise", "deblur", "jpeg", "rain", "tone"] and net.classes[0] == "clean"
        assert sum(p.numel() for p in net.experts[0].parameters()) == 438_387  # nafnet-s experts
