"""bfloat16 on a CPU whose torch kernels lack it: ``ramir restore --precision bf16`` and training with
``train.amp: bf16`` fall back to float32 and say so in one line, once.

torch's x86 bfloat16 paths are written for its AVX-512 kernels; on the AVX2 or baseline ones (an older CPU,
or ``ATEN_CPU_CAPABILITY``) some raise — "pack_vnni2 is only supported when avx512 is supported" on a CPU
with AMX — so ramir does not try. The end-to-end test forces the AVX2 kernels with ``ATEN_CPU_CAPABILITY``
in a subprocess (the variable is read once, when torch starts), so it runs on any x86 CPU.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ramir
from ramir import inference
from ramir.devices import cpu_bf16_problem

X86 = platform.machine().lower() in ("x86_64", "amd64", "x86", "i386", "i686")
TESTS = Path(__file__).resolve().parent


def test_the_kernels_decide():
    capability = torch.backends.cpu.get_cpu_capability()
    if X86:
        assert (cpu_bf16_problem() is None) == capability.startswith("AVX512"), capability
    else:
        assert cpu_bf16_problem() is None


def test_restorer_falls_back_to_fp32_with_one_note(monkeypatch):
    net = ramir.create_model("nafnet-s", width=8)
    said: list[str] = []
    monkeypatch.setattr(inference, "cpu_bf16_problem", lambda: "torch runs its AVX2 CPU kernels here")
    r = ramir.load(net, device="cpu", precision="bf16", backend="torch", announce=said.append)
    assert r.precision == "fp32"
    assert said == ["ramir: note: --precision bf16: torch runs its AVX2 CPU kernels here; restoring in fp32"]
    with pytest.warns(UserWarning, match="restoring in fp32"):  # without a CLI: a warning, once
        assert ramir.load(net, device="cpu", precision="bf16", backend="torch").precision == "fp32"
    monkeypatch.setattr(inference, "cpu_bf16_problem", lambda: None)  # kernels with bf16: kept
    assert ramir.load(net, device="cpu", precision="bf16", backend="torch", announce=said.append).precision \
        == "bf16"
    assert len(said) == 1


_SCRIPT = """
import contextlib, io, json, sys, warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, {tests!r})
import ramir
from ramir.checkpoints import save_checkpoint
from ramir.cli import main
from ramir.training import Trainer, recipe_from_dict
from test_training import NoisyImages, tiny_recipe, toy

tmp = Path({tmp!r})
torch.manual_seed(0)
save_checkpoint(tmp / "net.safetensors", ramir.create_model("nafnet-s", width=8))
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(tmp / "in.png")
runs = {{}}
for precision in ("bf16", "fp32"):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["restore", str(tmp / "in.png"), "-o", str(tmp / precision), "--model",
                     str(tmp / "net.safetensors"), "--precision", precision, "--device", "cpu",
                     "--backend", "torch", "--tile", "0"])
    runs[precision] = {{"code": code, "err": err.getvalue().splitlines(),
                        "pixels": np.asarray(Image.open(tmp / precision / "in.png")).tolist()}}
recipe = recipe_from_dict(tiny_recipe(train={{"amp": "bf16", "device": "cpu"}}))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer = Trainer(recipe, model=toy(), train_set=NoisyImages(), output_dir=tmp / "train", progress=False)
    trainer.fit()
print(json.dumps({{"capability": torch.backends.cpu.get_cpu_capability(), "restore": runs,
                   "amp": trainer.amp, "train": [str(w.message) for w in caught]}}))
"""


@pytest.mark.skipif(not X86, reason="ATEN_CPU_CAPABILITY=avx2 names x86 kernels")
def test_restore_and_training_under_avx2_kernels(tmp_path):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1", "RAMIR_TEST_THREADS": "1"}
    code = textwrap.dedent(_SCRIPT.format(tests=str(TESTS), tmp=str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["capability"] == "AVX2"
    bf16, fp32 = doc["restore"]["bf16"], doc["restore"]["fp32"]
    assert bf16["code"] == fp32["code"] == 0
    notes = [line for line in bf16["err"] if "bfloat16" in line]
    why = ("torch runs its AVX2 CPU kernels here (ATEN_CPU_CAPABILITY=avx2), which have no bfloat16 path "
           "(needs AVX-512)")
    assert notes == [f"ramir: note: --precision bf16: {why}; restoring in fp32"]
    assert not any("bfloat16" in line for line in fp32["err"])
    assert np.array_equal(np.array(bf16["pixels"]), np.array(fp32["pixels"]))  # it did run in fp32
    assert doc["amp"] == "none"
    said = [m for m in doc["train"] if "amp" in m]
    assert said == [f"train.amp=bf16: {why}; training in float32 on cpu"]
