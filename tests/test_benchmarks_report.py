"""The benchmark harness reports what it measures: checked against facts known independently of its code.

`python -m benchmarks` keeps the hand-written text of docs/performance.md; the assumed peak follows the
CPU's vector width; the FLOP counter credits the CPU attention kernel; the forward timer attributes each
time to the path that ran (a network of known cost and known speed); batching MAC path points keeps the
ranking (the GPU script's parts, run in-process on the CPU); each script's own checks hold on tiny configs.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks`

from benchmarks import common
from benchmarks.__main__ import BEGIN, END, merge_report

from ramir.errors import ConfigError


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


@pytest.mark.parametrize(("flags", "unit", "gflops"), [
    # fp32 FLOP per cycle and core with two FMA units: 64 with AVX-512 (16 lanes), 32 with AVX2 (8), 16 (4)
    ({"sse2", "avx", "avx2", "fma", "avx512f"}, "AVX-512 (16 fp32 lanes, FMA)", 2 * 64 * 2.0),
    ({"sse2", "avx", "avx2", "fma"}, "AVX2 (8 fp32 lanes, FMA)", 2 * 32 * 2.0),
    ({"sse2"}, "(4 fp32 lanes)", 2 * 16 * 2.0),
])
def test_assumed_peak_follows_the_vector_width_in_the_cpu_flags(monkeypatch, flags, unit, gflops):
    """The issue's complaint: 16 fp32 lanes were assumed on an AVX2-only CPU, halving its % of peak."""
    monkeypatch.setattr(common, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(common, "cpu_model", lambda: "Test CPU 9000")
    assert common.peak_gflops(2, ghz=2.0)[0] == gflops  # 2 cores at 2 GHz
    line = common.describe_machine()
    assert line.startswith("CPU: Test CPU 9000, ") and unit in line and f"torch {torch.__version__}" in line


def test_flop_counter_credits_the_cpu_attention_kernel():
    """Fast paths call SDPA, which on the CPU is a fused kernel torch's counter does not know (it reports
    0): Q K^T and the weights times V are 2 x B H L S D multiply-adds each."""
    b, h, length, d = 1, 2, 16, 8
    q, k, v = (torch.randn(b, h, length, d) for _ in range(3))
    counter = common.flop_counter()
    with torch.inference_mode(), counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * (2 * b * h * length * length * d)


class PacedNet(torch.nn.Module):
    """A network of known cost and speed: one (1, 3 S^2) x (3 S^2, 16) product, and a pause of 20 ms on the
    fast path, 60 ms on the literal one."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ramir.archs.common import straightforward_path_enabled

        time.sleep(0.06 if straightforward_path_enabled() else 0.02)
        return x.flatten(1) @ self.w


def test_forward_bench_times_each_path_and_counts_the_arithmetic(monkeypatch, capsys):
    """The child of `python -m benchmarks.forward_bench` on a network whose FLOPs and path times are known:
    each time belongs to the path that ran, the ratio is the speed-up, the count is the product's."""
    from benchmarks import forward_bench

    import ramir

    size = 8
    monkeypatch.setattr(ramir, "create_model", lambda name: PacedNet(size))
    threads = torch.get_num_threads()
    try:
        forward_bench.main(["--json", "--models", "paced", "--sizes", str(size), "--threads", "1",
                            "--repeats", "3", "--straightforward"])
    finally:
        torch.set_num_threads(threads)  # the script sets it for its process
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["flops"] == 2 * (3 * size * size) * 16
    assert len(r["fast_s"]) == len(r["straightforward_s"]) == 3
    # sleeps overrun by milliseconds on a busy machine, never fall short: the bounds keep the paths apart
    assert all(0.0195 <= t < 0.05 for t in r["fast_s"]), r["fast_s"]
    assert all(0.0595 <= t < 0.12 for t in r["straightforward_s"]), r["straightforward_s"]
    assert 2.0 < r["median_ratio"] < 4.5  # about 3: straightforward / fast, not the inverse


def test_gpu_bench_parts_run_on_the_cpu(monkeypatch, tmp_path):
    """The GPU script meets a GPU only on rare lent machines: its smoke settings (GPU_BENCH_SMOKE=1) keep
    its MAC and training parts from rotting. Batching path points must not change the MAC ranking."""
    monkeypatch.setenv("GPU_BENCH_SMOKE", "1")
    gpu_bench = importlib.reload(importlib.import_module("benchmarks.gpu_bench"))
    records: list[dict] = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        gpu_bench.part_mac(records.append)
        gpu_bench.part_train(records.append)
    finally:
        torch.set_num_threads(threads)
        monkeypatch.delenv("GPU_BENCH_SMOKE")
        importlib.reload(gpu_bench)  # the module's settings as a plain import gives them
    batched = [r for r in records if r["part"] == "mac" and r["batch_steps"] > 1]
    assert batched and all(r["identical_ranking"] for r in batched)
    train = [r for r in records if r["part"] == "train"]
    assert [(r["batch"], r["amp"], r["channels_last"]) for r in train] == [
        (4, "none", False), (4, "bf16", False), (4, "bf16", True), (32, "none", False), (32, "bf16", False)]
    assert all(len(r["times_s"]) == 3 and r["it_per_s"] > 0 and not r["compile_fell_back"] for r in train)


def test_train_bench_times_engine_steps_of_both_stages():
    from benchmarks.train_bench import bench_recipe, measure

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pre = measure("ram-swinir-small", "pretrain", batch=2, patch=16, iterations=2, warmup=1)
        fine = measure("ram-swinir-small", "finetune", batch=2, patch=16, iterations=2, warmup=1)
    finally:
        torch.set_num_threads(threads)
    assert pre["params"] >= pre["trainable"] > fine["trainable"] > 0  # fine-tuning trains the top 10 %
    assert all(r["it_per_s"] > 0 for r in (pre, fine))
    with pytest.raises(ConfigError, match=r"unknown recipe key 'train\.not_a_setting'"):
        bench_recipe("pretrain", 2, 3, not_a_setting=True)


def _run_main(capsys, module: str, argv: list[str]) -> str:
    threads = torch.get_num_threads()
    try:
        importlib.import_module(module).main(argv)
    finally:
        torch.set_num_threads(threads)  # the scripts set it for their process
    return capsys.readouterr().out


def test_conv_layout_bench_compares_equal_outputs(capsys):
    out = _run_main(capsys, "benchmarks.conv_layout_bench",
                    ["--size", "24", "--channels", "8", "--pairs", "2"])
    difference = float(out.split("max abs difference of the outputs ")[1].split()[0])
    assert difference < 1e-5  # the two layouts convolve the same map
    assert "literal: median" in out and "channels_last: median" in out and "median of pairs" in out


def test_profile_forward_lists_operators_with_their_input_shapes(capsys):
    out = _run_main(capsys, "benchmarks.profile_forward",
                    ["--model", "ram-swinir-small", "--size", "32", "--shapes", "--rows", "40"])
    assert out.startswith("CPU: ") and "input shapes" in out
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


def test_recipe_throughput_describes_each_recipe_it_times(tmp_path, capsys):
    old = _tiny_recipe(tmp_path, "old", 2, 32, False)
    new = _tiny_recipe(tmp_path, "new", 4, 16, True)
    out = _run_main(capsys, "benchmarks.recipe_throughput",
                    ["--old", old, "--new", new, "--threads", "1", "--steps", "2", "--warmup", "1",
                     "--pairs", "2"])
    described = [line for line in out.splitlines() if line.strip().startswith(("old:", "new:"))]
    assert "batch 2 x 32x32" in described[0] and "channels_last False" in described[0]
    assert "batch 4 x 16x16" in described[1] and "channels_last True" in described[1]
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"] and all(len(row) == 6 for row in rows)  # one row a pair
    assert "median ratio (samples/s, new/old)" in out
