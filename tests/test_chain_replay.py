"""The offline replay of recorded chains (experiments/experts/chain_steps.py), which chose the chain's
threshold, its order rule and (not adopted) a confidence blend: on hand-made recordings whose outcome under
each setting is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `experiments`
chain_steps = pytest.importorskip("experiments.experts.chain_steps")


def line(task: str, inp: float, steps: list[tuple[str, float, float]], first: dict[str, float]) -> dict:
    """A recorded image: ``steps`` as (expert, p, PSNR after it); the first also with a linear blend grid."""
    rec = [{"expert": e, "label": e, "p": p, "psnr": q} for e, p, q in steps]
    if rec:
        rec[0]["blend"] = list(np.linspace(inp, steps[0][2], 11))
    return {"task": task, "image": f"{task}-{len(steps)}", "input": inp, "steps": rec, "first": first}


HAZY_NOISY = line("hn", 20.0, [("noise", 0.9, 24.0), ("tone", 0.7, 28.0)], {"noise": 0.9, "clean": 0.1})
RAINY = line("r", 25.0, [("rain", 0.8, 30.0), ("tone", 0.7, 27.0)], {"rain": 0.8, "clean": 0.2})
DOUBT = line("d", 40.0, [("deblur", 0.2, 38.0)], {"clean": 0.6, "deblur": 0.2, "rain": 0.2})


def test_replay_follows_threshold_steps_and_order() -> None:
    assert chain_steps._replay(HAZY_NOISY, 2, 0.6, {}) == 28.0
    assert chain_steps._replay(HAZY_NOISY, 2, 0.8, {}) == 24.0  # second step below the threshold
    assert chain_steps._replay(HAZY_NOISY, 1, 0.0, {}) == 24.0
    assert chain_steps._replay(RAINY, 2, 0.6, {"tone": ["noise"]}) == 30.0  # refused after rain
    assert chain_steps._replay(HAZY_NOISY, 2, 0.6, {"tone": ["noise"]}) == 28.0
    assert chain_steps._replay(line("c", 50.0, [], {"clean": 1.0}), 2, 0.6, {}) == 50.0


def test_learned_order_refuses_only_pairs_that_lost() -> None:
    assert chain_steps.learn_after([HAZY_NOISY, RAINY, DOUBT], 0.6) == {"tone": ["deblur", "noise"]}
    assert chain_steps.learn_after([HAZY_NOISY, RAINY], 0.75) == {}  # tone at p 0.7 is not counted


def test_blend_weight_and_interpolation() -> None:
    assert chain_steps._blend_weight(DOUBT, None, True) == 1.0
    assert chain_steps._blend_weight(DOUBT, 0.4, True) == pytest.approx(0.5)
    assert chain_steps._blend_weight(RAINY, 0.9, True) == 1.0  # not in doubt: rain is most probable
    assert chain_steps._blend_weight(RAINY, 0.9, False) == pytest.approx(0.8 / 0.9)
    assert chain_steps._blended(DOUBT, 0.5) == pytest.approx(39.0)
    assert chain_steps._blended(DOUBT, 0.25) == pytest.approx(39.5)


def test_choose_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "steps.jsonl"
    rec.write_text("".join(json.dumps(d) + "\n" for d in (HAZY_NOISY, RAINY, DOUBT)))
    assert chain_steps.main(["--out", str(rec), "--choose", "--after", '{"tone": ["noise"]}']) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")}
    # 2 steps at 0.6 under the rule: hazy noisy +8, rainy +5, doubtful -2; one image below its input
    assert rows["2, 0.6"].split("|")[1:4] == [" 2, 0.6 ", " +8.00 ", " +5.00 "]
    assert rows["2, 0.6"].rstrip(" |").endswith("| 1")
    assert chain_steps.main(["--out", str(rec), "--choose", "--blend", "--steps", "2"]) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")}
    assert "-2.00 (1)" in rows["none"] and "-1.00 (1)" in rows["p/0.4, doubt only"]


def test_floor_leaves_doubtful_steps_below_it() -> None:
    assert chain_steps._blend_weight(DOUBT, 0.25, True, floor=True) == 0.0
    assert chain_steps._blend_weight(DOUBT, 0.15, True, floor=True) == 1.0
    assert chain_steps._blend_weight(RAINY, 0.9, True, floor=True) == 1.0
