"""End to end on a tiny RAM-SwinIR: `ramir pretrain` -> `ramir mac` -> `ramir finetune` -> better images.

Clean photos bundled with scikit-image, shrunk to 128 px, are degraded online with Gaussian noise. The
fine-tuned checkpoint must restore two held-out photos (not seen in training) better than their noisy
input, by a margin well inside what the pipeline reaches (about +3 dB in development runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ramir.checkpoints import load_checkpoint, load_network
from ramir.cli import main
from ramir.imagespace import denormalize, normalize
from ramir.layers import attributable_layers
from ramir.metrics import psnr, quantize_u8
from ramir.ranking import load_ranking

TRAIN_PHOTOS = ["astronaut", "colorwheel", "rocket", "immunohistochemistry", "retina", "hubble_deep_field"]
HELD_OUT = ["chelsea", "coffee"]
TINY = {"embed_dim": 12, "depths": [1, 1], "num_heads": [2, 2]}


def _write_photos(folder: Path, names: list[str], side: int = 128) -> None:
    import skimage.data

    folder.mkdir(parents=True)
    for name in names:
        img = getattr(skimage.data, name)()[..., :3]
        h, w = img.shape[:2]
        scale = side / max(h, w)
        small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.png"), np.ascontiguousarray(small[..., ::-1]))


def _restoration_gain(checkpoint: Path, folder: Path, sigma: float = 25.0) -> list[tuple[float, float]]:
    """(PSNR of the noisy input, PSNR of the restored image) per held-out photo, reference protocol."""
    net = load_network(checkpoint)
    results = []
    for i, path in enumerate(sorted(folder.glob("*.png"))):
        gt = torch.from_numpy(cv2.imread(str(path))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(100 + i))
        noisy = (gt + sigma / 255 * noise).clamp(0, 1)
        with torch.no_grad():
            restored = denormalize(net(normalize(noisy))).clamp(0, 1)
        as_u8 = lambda t: quantize_u8(t[0].permute(1, 2, 0).numpy())  # noqa: E731
        results.append((psnr(as_u8(noisy), as_u8(gt)), psnr(as_u8(restored), as_u8(gt))))
    return results


@pytest.mark.slow
def test_pretrain_mac_finetune_restores_noisy_images(tmp_path):
    _write_photos(tmp_path / "clean", TRAIN_PHOTOS)
    _write_photos(tmp_path / "held_out", HELD_OUT)
    noise = {"kind": "noise", "sigma": [10, 30]}
    pretrain = {
        "name": "e2e",
        "stage": "pretrain",
        "model": {"name": "ram-swinir-small", "overrides": TINY},
        "data": {
            "train": {"patch_size": 32, "samples_per_epoch": 400,
                      "sources": [{"name": "noise", "type": "clean", "root": "clean", "degradation": noise}]},
            "val": {"size": 64, "sources": [{"name": "noise20", "type": "clean", "root": "held_out",
                                             "degradation": {"kind": "noise", "sigma": 20}}]},
        },
        "optim": {"lr": 1e-3},
        "schedule": {"iterations": 100, "warmup": 10, "eta_min": 1e-5},
        "ema": {"decay": 0.9},
        "train": {"batch_size": 4, "log_every": 25, "save_every": 50, "seed": 0},
        "output_dir": str(tmp_path / "pretrain"),
    }
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    finetune = {
        "_base_": "pretrain.yaml",
        "name": "e2e_finetune",
        "stage": "finetune",
        "finetune": {"ratio": 0.5},
        "optim": {"lr": 2e-3},
        "schedule": {"iterations": 200, "warmup": 5, "eta_min": 1e-5},
        "output_dir": str(tmp_path / "finetune"),
    }
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(finetune))

    # stage 1: masked pre-training through the CLI
    assert main(["pretrain", str(tmp_path / "pretrain.yaml"), "--no-progress"]) == 0
    pretrained = tmp_path / "pretrain" / "final.safetensors"
    log = [json.loads(line) for line in (tmp_path / "pretrain" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any("val_psnr" in r for r in log)
    assert sorted(p.name for p in (tmp_path / "pretrain" / "ckpt").iterdir())[-1] == "iter_00000100.state"

    # stage 2: MAC ranking of the pre-trained (raw) weights, on degraded crops of the training sources
    assert main(["mac", str(pretrained), "--config", str(tmp_path / "pretrain.yaml"), "--per-source", "4",
                 "--size", "32", "--steps", "8", "--out", str(tmp_path / "ranking.json"), "--quiet"]) == 0
    ranking = load_ranking(tmp_path / "ranking.json")
    net = load_network(pretrained)
    assert sorted(ranking) == sorted(attributable_layers(net))

    # stage 3: fine-tune the top half of the ranked layers through the CLI
    assert main(["finetune", str(tmp_path / "finetune.yaml"), "--ranking", str(tmp_path / "ranking.json"),
                 "--init", str(pretrained), "--no-progress"]) == 0
    tuned = tmp_path / "finetune" / "final.safetensors"

    # exactly the selected layers moved; every other weight is the pre-trained raw weight, bit for bit
    before, after = load_checkpoint(pretrained), load_checkpoint(tuned)
    selected = set(ranking[: int(len(ranking) * 0.5)])
    assert after.stage == "finetune" and after.metadata["finetuned_layers"] == ranking[: len(selected)]
    parameters = {name for name, _ in net.named_parameters()}
    for key, value in before.raw_state_dict.items():
        layer = key.rsplit(".", 1)[0] if "." in key else ""
        moved = not torch.equal(value, after.raw_state_dict[key])
        assert moved == (key in parameters and layer in selected), key  # buffers never move
        if not moved:
            assert torch.equal(value, after.ema_state_dict[key]), key

    # the result restores held-out noisy photos: clearly above the noisy input
    gains = _restoration_gain(tuned, tmp_path / "held_out")
    for noisy_psnr, restored_psnr in gains:
        assert restored_psnr > noisy_psnr + 1.5, gains
