"""`python -m benchmarks` writes its tables into docs/performance.md without erasing the hand-written text."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks`

from benchmarks.__main__ import BEGIN, END, merge_report


def test_report_is_appended_then_replaced_between_markers(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nHand-written notes.\n")
    first = merge_report(str(page), "## One run\nfirst table\n")
    assert first.startswith("# Performance\n\nHand-written notes.\n")
    assert first.count(BEGIN) == 1 and "first table" in first
    page.write_text(first + "\nMore notes after the run.\n")
    second = merge_report(str(page), "## One run\nsecond table\n")
    assert "first table" not in second and "second table" in second
    assert second.count(BEGIN) == 1 and second.count(END) == 1
    assert "Hand-written notes." in second and "More notes after the run." in second


def test_missing_page_gets_a_title(tmp_path):
    text = merge_report(str(tmp_path / "none.md"), "table")
    assert text.startswith("# Performance\n") and f"{BEGIN}\ntable\n{END}" in text


def test_parts_not_rerun_are_kept_in_order(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n")
    first = "## Tables\nhead 1\n\n### train\n\nold train\n\n### restore\n\nold restore\n"
    page.write_text(merge_report(str(page), first))
    second = "## Tables\nhead 2\n\n### forward\n\nnew forward\n\n### train\n\nnew train\n"
    text = merge_report(str(page), second)
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "head 2" in block and "head 1" not in block
    assert "old restore" in block and "new train" in block and "old train" not in block
    # FULL's order: forward, mac, restore, train, backends
    assert block.index("### forward") < block.index("### restore") < block.index("### train")
    assert block.count("### ") == 3


def test_gpu_bench_script_runs_in_smoke_mode(tmp_path):
    """The GPU script only meets a GPU in rare lent sessions: its CPU smoke mode keeps it from rotting."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GPU_BENCH_SMOKE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "benchmarks.gpu_bench", "--out", str(tmp_path), "--parts", "mac", "train"]
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "gpu_bench.jsonl").read_text().splitlines()]
    batched = [r for r in records if r["part"] == "mac" and r["batch_steps"] > 1]
    assert batched and all(r["identical_ranking"] for r in batched)
    train = [r for r in records if r["part"] == "train"]
    assert [(r["batch"], r["amp"]) for r in train] == [(4, "none"), (4, "bf16"), (4, "bf16"), (32, "none"),
                                                       (32, "bf16")]
    assert all(len(r["times_s"]) == 3 and r["it_per_s"] > 0 for r in train)
    assert "(mac: exit 0" in run.stdout and "(train: exit 0" in run.stdout


def test_train_bench_times_engine_steps_of_both_stages():
    import pytest
    import torch
    from benchmarks.train_bench import bench_recipe, measure

    from ramir.errors import ConfigError

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pre = measure("ram-swinir-small", "pretrain", batch=2, patch=16, iterations=2, warmup=1)
        fine = measure("ram-swinir-small", "finetune", batch=2, patch=16, iterations=2, warmup=1)
    finally:
        torch.set_num_threads(threads)
    assert pre["params"] >= pre["trainable"] > fine["trainable"] > 0  # fine-tuning trains the top 10 %
    assert all(r["it_per_s"] > 0 and r["s_per_it"] == pytest.approx(1 / r["it_per_s"]) for r in (pre, fine))
    with pytest.raises(ConfigError, match=r"unknown recipe key 'train\.not_a_setting'"):
        bench_recipe("pretrain", 2, 3, not_a_setting=True)


def test_interleaved_bench_alternates_the_paths():
    import torch
    from benchmarks.interleaved_bench import interleaved

    threads = torch.get_num_threads()
    try:
        r = interleaved("ram-swinir-small", 32, threads=1, pairs=2)
        counted = interleaved("ram-swinir-small", 32, threads=1, pairs=1, straightforward=False,
                              count_flops=True)
    finally:
        torch.set_num_threads(threads)  # the function sets it for its process
    assert len(r["fast_s"]) == len(r["straightforward_s"]) == len(r["ratios"]) == 2
    assert all(t > 0 for t in r["fast_s"] + r["straightforward_s"])
    assert r["ratios"] == [s / f for f, s in zip(r["fast_s"], r["straightforward_s"])]
    assert r["flops"] is None
    # fast path alone: no pairs, and the counted warm-up credits the network's arithmetic
    assert len(counted["fast_s"]) == 1 and counted["straightforward_s"] == counted["ratios"] == []
    assert counted["median_ratio"] is None and counted["flops"] > 0


def _run_main(monkeypatch, capsys, module, argv: list[str]) -> str:
    import importlib

    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [module, *argv])
    try:
        importlib.import_module(module).main()
    finally:
        torch.set_num_threads(threads)  # the scripts set it for their process
    return capsys.readouterr().out


def test_conv_layout_bench_compares_equal_outputs(monkeypatch, capsys):
    out = _run_main(monkeypatch, capsys, "benchmarks.conv_layout_bench",
                    ["--size", "24", "--channels", "8", "--pairs", "2"])
    difference = float(out.split("max abs difference of the outputs ")[1].split()[0])
    assert difference < 1e-5  # the two layouts convolve the same map
    assert "literal: median" in out and "channels_last: median" in out and "median of pairs" in out


def test_profile_forward_lists_operators_with_their_input_shapes(monkeypatch, capsys):
    out = _run_main(monkeypatch, capsys, "benchmarks.profile_forward",
                    ["--model", "ram-swinir-small", "--size", "32", "--shapes", "--rows", "40"])
    assert "input shapes" in out
    conv_rows = [line for line in out.splitlines() if line.startswith("aten::mkldnn_convolution")]
    assert conv_rows and all("[[1, " in line for line in conv_rows)  # one image, shapes listed


def _tiny_recipe(tmp_path, name: str, batch: int, patch: int, channels_last: bool) -> str:
    import cv2
    import numpy as np

    folder = tmp_path / "clean"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        img = np.random.default_rng(i).integers(0, 256, (40, 48, 3), np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), img)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nstage: finetune\nfinetune: {{ratio: 1.0}}\n"
        "model: {name: nafnet, overrides: {width: 8, enc_blocks: [1], middle_blocks: 1, dec_blocks: [1]}}\n"
        f"data:\n  train:\n    patch_size: {patch}\n    sources:\n"
        "      - {name: noise, root: clean, degradation: {kind: noise, sigma: [0, 50]}}\n"
        f"train: {{batch_size: {batch}, channels_last: {str(channels_last).lower()}}}\n"
    )
    return str(path)


def test_recipe_throughput_times_two_recipes_alternately(tmp_path, monkeypatch, capsys):
    old = _tiny_recipe(tmp_path, "old", 2, 32, False)
    new = _tiny_recipe(tmp_path, "new", 4, 16, True)
    out = _run_main(monkeypatch, capsys, "benchmarks.recipe_throughput",
                    ["--old", old, "--new", new, "--threads", "1", "--steps", "2", "--warmup", "1",
                     "--pairs", "2"])
    assert "batch 2 x 32x32" in out and "batch 4 x 16x16" in out and "channels_last True" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2
    for row in rows:  # samples/s and MP/s agree with the patch sizes, the ratio with the samples/s
        old_s, new_s, old_mp, new_mp = map(float, row[1:5])
        assert abs(old_mp - old_s * 32 * 32 / 1e6) < 1e-3 and abs(new_mp - new_s * 16 * 16 / 1e6) < 1e-3
        assert abs(float(row[5].rstrip("x")) - new_s / old_s) < 0.01
    assert "median ratio (samples/s, new/old)" in out


def test_restoration_sheet_draws_one_row_per_task(tmp_path, monkeypatch, capsys):
    import cv2
    import numpy as np

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
    _run_main(monkeypatch, capsys, "benchmarks.restoration_sheet",
              ["--suite", str(suite), "--model", str(tmp_path / "m.safetensors"), "--out", str(out),
               "--crop", "32"])
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 3 * (32 + 4)  # input | restored | clean
    assert sheet.shape[0] > 2 * 32
