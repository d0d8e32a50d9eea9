"""The figure makers of experiments/figures/ draw what the docs show, on tiny inputs made here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `experiments`


def test_restoration_sheet_draws_one_row_per_task(tmp_path, capsys):
    import cv2
    import numpy as np
    from experiments.figures.restoration_sheet import main

    import ramir
    from ramir.checkpoints import save_checkpoint

    for i in range(2):
        img = np.random.default_rng(i).integers(0, 256, (40, 48, 3), np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n"
                     f"  n25: {{clean: {tmp_path}, degradation: noise, level: 25}}\n"
                     f"  clean: {{clean: {tmp_path}, degradation: none}}\n")
    save_checkpoint(tmp_path / "m.safetensors",
                    ramir.create_model("nafnet", width=8, enc_blocks=[1], middle_blocks=1, dec_blocks=[1]))
    out = tmp_path / "sheet.png"
    assert main(["--suite", str(suite), "--model", str(tmp_path / "m.safetensors"), "--out", str(out),
                 "--crop", "32"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 3 * (32 + 4)  # input | restored | clean
    assert sheet.shape[0] > 2 * 32
    assert capsys.readouterr().out.startswith(f"{out}: {sheet.shape[1]}x{sheet.shape[0]}")
