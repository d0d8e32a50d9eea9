"""ramir.inference: tiles that blend without seams, fallbacks, and a Python API that returns what it gets."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import ramir
from ramir.errors import CheckpointError, ImageError, RamirError
from ramir.imagespace import denormalize, normalize
from ramir.inference import (
    NO_DEFAULT_MODEL,
    Restorer,
    auto_tile,
    axis_weights,
    default_weights,
    load,
    network_multiple,
    restore_tensor,
    tile_spans,
)


def conv_stack(layers: int = 4, seed: int = 0) -> nn.Module:
    """3x3 convolutions: receptive-field radius = ``layers`` pixels (zero padding like the whole image)."""
    torch.manual_seed(seed)
    chans = [3] + [8] * (layers - 1) + [3]
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
        if i < layers - 1:
            mods.append(nn.GELU())
    return nn.Sequential(*mods).eval()


def tiny_swinir(depths=(1,)) -> nn.Module:
    torch.manual_seed(0)
    heads = [2] * len(depths)
    return ramir.create_model("ram-swinir-small", embed_dim=12, depths=list(depths), num_heads=heads).eval()


# ------------------------------------------------------------------------------------------ tile layout
@pytest.mark.parametrize(
    "length, tile, overlap, multiple",
    [(100, 64, 16, 8), (37, 16, 8, 8), (500, 128, 32, 8), (93, 32, 16, 1), (64, 64, 16, 8), (65, 64, 16, 16)],
)
def test_tile_spans_cover_align_and_overlap(length, tile, overlap, multiple):
    spans = tile_spans(length, tile, overlap, multiple)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (s0, e0), (s1, _) in itertools.pairwise(spans):
        assert s1 > s0 and e0 - s1 >= overlap  # neighbours overlap by at least `overlap`
    for s, e in spans:
        assert s % multiple == 0  # windows line up with the whole image's
        assert e - s <= tile + multiple - 1
    weights = axis_weights(spans, length, overlap)
    total = torch.zeros(length)
    for (s, e), w in zip(spans, weights):
        assert w.shape == (e - s,) and (w >= 0).all()
        if s > 0:
            assert (w[: overlap // 4] == 0).all()  # zero margin next to an inner edge
        total[s:e] += w
    assert torch.allclose(total, torch.ones(length), atol=1e-6)


# ---------------------------------------------------------------------------------- tiled == whole image
def test_tiled_equals_whole_for_convolutions_within_the_margin():
    net = conv_stack(4)  # receptive-field radius 4 = overlap // 4 for overlap 16
    x = torch.rand(2, 3, 70, 93, generator=torch.Generator().manual_seed(1))
    whole = restore_tensor(net, x, tile=0)
    for tile in (32, 48):
        tiled = restore_tensor(net, x, tile=tile, overlap=16)
        assert (tiled - whole).abs().max() < 1e-5
        batched = restore_tensor(net, x, tile=tile, overlap=16, tile_batch=3)  # as on a GPU
        assert (batched - tiled).abs().max() < 1e-6
    # the claim is not vacuous: with a margin smaller than the receptive field, tiles do differ
    naive = restore_tensor(net, x, tile=32, overlap=2)
    assert (naive - whole).abs().max() > 1e-3


def test_tiled_equals_whole_for_tiny_swinir():
    """One unshifted Swin layer (window 8) + 3x3 convs: tiles aligned to the window reproduce the whole
    image exactly once the overlap margin covers the convs. (Deeper SwinIRs are only close: shifted
    windows and stacked layers widen the receptive field past any fixed overlap.)"""
    net = tiny_swinir((1,))
    assert network_multiple(net) == 8
    x = torch.rand(1, 3, 70, 93, generator=torch.Generator().manual_seed(2))  # not multiples of 8
    whole = restore_tensor(net, x, tile=0)
    for tile, overlap in ((32, 16), (48, 16), (64, 32)):
        tiled = restore_tensor(net, x, tile=tile, overlap=overlap)
        assert (tiled - whole).abs().max() < 1e-3
        assert tiled.shape == whole.shape == x.shape


class TileMean(nn.Module):
    """A network with a global operation: outputs the tile's mean colour (worst case for seams)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


def test_blending_has_no_seams():
    h, w = 64, 160
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 3, h, w).contiguous()
    out = restore_tensor(TileMean(), ramp, tile=32, overlap=16)
    tile_means = [ramp[..., x0:x1].mean().item() for x0, x1 in tile_spans(w, 32, 16)]
    jump_between_tiles = max(abs(a - b) for a, b in itertools.pairwise(tile_means))
    steps = (out[..., 1:] - out[..., :-1]).abs().max().item()
    assert steps < 0.5 * jump_between_tiles  # a hard cut would jump by the full difference
    assert (out[..., 1:] - out[..., :-1] >= -1e-6).all()  # and blending stays monotone


# ------------------------------------------------------------------------------------------- fallbacks
class OOMAbove(nn.Module):
    """Raises an out-of-memory error above ``limit`` pixels per forward, like a GPU would."""

    def __init__(self, limit: int, error: type[BaseException] = RuntimeError) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.limit, self.error = limit, error
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[-1] * x.shape[-2] * x.shape[0])
        if self.sizes[-1] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x)


@pytest.mark.parametrize("error", [RuntimeError, MemoryError])
def test_out_of_memory_retries_with_smaller_tiles(error):
    net = OOMAbove(64 * 64, error)
    x = torch.rand(1, 3, 96, 120)
    with pytest.warns(UserWarning, match="out of memory"):
        out = restore_tensor(net, x, tile=0, overlap=8)
    assert max(net.sizes) > net.limit and out.shape == x.shape
    assert torch.isfinite(out).all()
    with pytest.raises(RamirError, match="out of memory"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restore_tensor(OOMAbove(10), x, tile=0)


def test_other_errors_are_not_mistaken_for_oom():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes"):
        restore_tensor(Broken(), torch.rand(1, 3, 16, 16), tile=0)


class NaNWhenReduced(nn.Module):
    """Fine in fp32, NaN under autocast: the failure reduced precision can cause."""

    def __init__(self, black: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.black = black

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.dtype == torch.float32:
            return y
        if self.black:  # normalised value that de-normalises to 0
            return normalize(torch.zeros_like(y, dtype=torch.float32))
        return y * float("nan")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("black", [False, True])
def test_reduced_precision_falls_back_to_fp32(precision, black):
    net = NaNWhenReduced(black)
    x = torch.rand(1, 3, 24, 40)
    reference = restore_tensor(net, x, tile=0)
    with pytest.warns(UserWarning, match="redoing this image in fp32"):
        out = restore_tensor(net, x, tile=16, overlap=8, precision=precision)
    assert torch.isfinite(out).all()
    assert torch.equal(out, restore_tensor(net, x, tile=16, overlap=8))
    assert (out - reference).abs().max() < 1e-5


def test_reduced_precision_runs_when_it_works():
    net = conv_stack(2)
    x = torch.rand(1, 3, 24, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = restore_tensor(net, x, tile=0, precision="bf16")
    assert (out - restore_tensor(net, x, tile=0)).abs().max() < 0.05


def test_nan_in_fp32_is_an_error():
    class NaN(nn.Module):
        def forward(self, x):
            return x * float("nan")

    with pytest.raises(RamirError, match="NaN"):
        restore_tensor(NaN(), torch.rand(1, 3, 8, 8), tile=0)


def test_auto_tile_follows_free_memory():
    cpu = torch.device("cpu")
    assert auto_tile(400, 600, bpp=1000, device=cpu, multiple=8, free=10**10) == 0
    # a big machine does not raise the budget: a 24-megapixel image is tiled the same with 16 GB free
    # as with 256 GB (peak memory bounded by default, not a share of whatever is free)
    from ramir.inference import TILE_BUDGET

    big = auto_tile(4000, 6000, bpp=8192, device=cpu, multiple=8, free=256 << 30)
    assert big == auto_tile(4000, 6000, bpp=8192, device=cpu, multiple=8, free=16 << 30) > 0
    assert 8192 * big * big <= TILE_BUDGET
    t = auto_tile(4000, 6000, bpp=10_000, device=cpu, multiple=8, free=2 * 10**9)
    assert t % 8 == 0 and 128 <= t <= 2048 and t * t * 10_000 <= 10**9
    x = torch.rand(1, 3, 40, 56)
    net = conv_stack(2)
    assert torch.allclose(restore_tensor(net, x, tile="auto"), restore_tensor(net, x, tile=0))


def test_max_memory_sets_the_tile_budget_and_tiny_tiles_are_refused(monkeypatch):
    from ramir import inference

    # the image's own buffers come out of the budget first: a 24-MP photo leaves less for activations
    assert inference.activation_budget(4000, 6000) < inference.activation_budget(1000, 1000)
    big = inference.activation_budget(4000, 6000, max_memory=8 << 30)
    assert big > inference.activation_budget(4000, 6000)
    assert inference.activation_budget(4000, 6000, max_memory=1) == inference.MIN_ACTIVATION_BYTES
    seen = []
    real = inference.auto_tile
    monkeypatch.setattr(inference, "auto_tile", lambda *a, **k: seen.append(k["budget"]) or real(*a, **k))
    x, net = torch.rand(1, 3, 40, 56), conv_stack(2)
    for mem in (1 << 30, 4 << 30):
        restore_tensor(net, x, tile="auto", max_memory=mem)
    assert seen == [inference.activation_budget(40, 56, 1, m) for m in (1 << 30, 4 << 30)]
    assert seen[0] < seen[1]
    for tile in (3, 8, 15):
        with pytest.raises(ValueError, match="at least 16"):
            restore_tensor(net, x, tile=tile)
    assert torch.allclose(restore_tensor(net, x, tile=16), restore_tensor(net, x, tile=0), atol=1e-6)


# -------------------------------------------------------------------------------------------- Restorer
@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return load(tiny_swinir((1,)), device="cpu", tile=32, overlap=16)


def _expected_rgb(restorer: Restorer, rgb01: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb01.astype(np.float32)).permute(2, 0, 1)[None]
    return restore_tensor(restorer.network, x, tile=32, overlap=16)[0].permute(1, 2, 0).numpy()


def test_numpy_in_numpy_out(restorer):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    out = restorer.restore(u8)
    assert out.dtype == np.uint8 and out.shape == u8.shape
    expected = np.rint(_expected_rgb(restorer, u8 / 255.0) * 255)
    assert np.abs(out.astype(float) - expected).max() <= 1

    u16 = rng.integers(0, 65536, (30, 41, 4), dtype=np.uint16)
    out = restorer.restore(u16)
    assert out.dtype == np.uint16 and out.shape == u16.shape
    assert np.array_equal(out[..., 3], u16[..., 3])  # alpha untouched
    assert np.abs(out[..., :3] / 65535.0 - _expected_rgb(restorer, u16[..., :3] / 65535.0)).max() < 1e-4

    f64 = rng.random((30, 41, 3))
    out = restorer.restore(f64)
    assert out.dtype == np.float64 and np.abs(out - _expected_rgb(restorer, f64)).max() < 1e-6

    grey = rng.random((30, 41)).astype(np.float32)
    out = restorer.restore(grey)
    assert out.shape == grey.shape and out.dtype == np.float32
    rgb = _expected_rgb(restorer, np.repeat(grey[..., None], 3, 2))
    assert np.abs(out - (rgb @ np.array([0.299, 0.587, 0.114]))).max() < 1e-5


def test_torch_in_torch_out(restorer):
    x = torch.rand(2, 3, 30, 41, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = restorer.restore(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    expected = restore_tensor(restorer.network, x.float(), tile=32, overlap=16)
    assert torch.allclose(out.float(), expected, atol=1e-6)
    chw = torch.rand(4, 30, 41)
    out = restorer.restore(chw)
    assert out.shape == chw.shape and torch.equal(out[3], chw[3])
    u8 = (torch.rand(1, 30, 41) * 255).to(torch.uint8)
    out = restorer.restore(u8)
    assert out.shape == u8.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "CMYK"])
def test_pil_in_pil_out(restorer, mode):
    rng = np.random.default_rng(4)
    base = Image.fromarray(rng.integers(0, 256, (30, 41, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (30, 41), dtype=np.uint16))
    elif mode == "P":
        im = base.convert("RGB").quantize(64)
    else:
        im = base.convert(mode)
    out = restorer.restore(im)
    assert isinstance(out, Image.Image) and out.mode == im.mode and out.size == im.size
    if "A" in mode:
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(im)[..., -1])
    if mode == "RGB":
        expected = np.rint(_expected_rgb(restorer, np.asarray(im) / 255.0) * 255)
        assert np.abs(np.asarray(out).astype(float) - expected).max() <= 1


def test_images_smaller_than_the_window_are_padded_and_cropped_back(restorer):
    rng = np.random.default_rng(0)
    for shape in ((5, 30, 3), (6, 5, 3), (1, 1, 3)):
        tiny = rng.integers(0, 256, shape, dtype=np.uint8)
        out = restorer.restore(tiny)
        assert out.shape == tiny.shape and out.dtype == np.uint8
        # the same as restoring the edge-replicated padding by hand and cropping
        h, w = shape[:2]
        padded = np.pad(tiny, ((0, max(0, 8 - h)), (0, max(0, 8 - w)), (0, 0)), mode="edge")
        assert np.abs(restorer.restore(padded)[:h, :w].astype(int) - out.astype(int)).max() <= 1


def test_wrong_inputs(restorer):
    with pytest.raises(ImageError, match="empty"):
        restorer.restore(np.zeros((0, 30, 3), np.uint8))
    with pytest.raises(ImageError):
        restorer.restore(np.zeros((20, 20, 5), np.uint8))
    with pytest.raises(TypeError):
        restorer.restore([[0, 1], [2, 3]])


def test_twin_mask_restorer_matches_the_formula():
    net = tiny_swinir((1,))
    twin = load(net, device="cpu", tile=0, twin_mask=True)
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(5))
    out = twin.restore(x)
    from ramir.masking import twin_mask_forward

    with torch.inference_mode():
        y = twin_mask_forward(net, normalize(x), 0.5, torch.Generator().manual_seed(0))
    ref = denormalize(y).clamp(0, 1)
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, load(net, device="cpu", tile=0).restore(x), atol=1e-4)


# ------------------------------------------------------------------------------------------------ load
def test_load_without_embedded_model_explains(no_default_model):
    with pytest.raises(RamirError, match="no embedded default model") as info:
        load()
    assert str(info.value) == NO_DEFAULT_MODEL
    with pytest.raises(RamirError, match="no embedded default model"):
        ramir.load(None, device="cpu", backend="torch")


def test_architecture_names_need_weights():
    with pytest.raises(RamirError, match="not trained weights"):
        load("ram-swinir-small")
    r = load("ram-swinir-small", device="cpu", allow_random=True)
    assert r.multiple == 8 and "random" in r.name
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load("does/not/exist.safetensors")


def test_load_checkpoint_file(tmp_path):
    from ramir import checkpoints
    net = tiny_swinir((1,))
    checkpoints.save_checkpoint(tmp_path / "tiny.safetensors", net)
    r = ramir.load(str(tmp_path / "tiny.safetensors"), device="cpu", tile=0)
    x = torch.rand(1, 3, 24, 32)
    assert torch.allclose(r.restore(x), load(net, device="cpu", tile=0).restore(x), atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error():
    with pytest.raises(RamirError, match="CUDA is not available"):
        load(conv_stack(1), device="cuda")


# measured for the shipped routed weights (2026-12-03): noise 25 +10.1 dB, low light +15.8, Gaussian blur 2
# +4.6, JPEG 20 +0.65; the clean crop comes back at 38.9 dB (the previous single network: noise +5.3,
# low light +15.8, blur and JPEG about 0, clean 36.4)
GAINS = {("noise", 25.0): 8.0, ("low_light", 0.04): 12.0, ("blur", 2.0): 3.0, ("jpeg", 20.0): 0.4}
CLEAN_KEPT = 35.5


def test_embedded_model_restores_photos():
    """The shipped weights load, clearly improve a noisy, a dark, a blurred and a JPEG photo and leave a
    clean one nearly untouched (a regression guard for the file in src/ramir/weights/, not a benchmark:
    docs/default-model.md has the measurements)."""
    if default_weights() is None:
        pytest.skip("this build ships no default model")
    import numpy as np
    from skimage import data

    from ramir.evaluation import degrade
    from ramir.metrics import psnr

    clean = data.astronaut()[96:352, 160:416].astype(np.float32) / 255.0
    gt = (clean * 255 + 0.5).astype(np.uint8)
    u8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    restorer = load(device="cpu", tile=0)
    for (kind, level), min_gain in GAINS.items():
        degraded = degrade(clean, kind, level, seed=0)
        gain = psnr(u8(restorer.restore(degraded)), gt) - psnr(u8(degraded), gt)
        assert gain > min_gain, (kind, gain, restorer.last_routes)
    # a photo with nothing to restore stays nearly as it is (the network must not take texture for noise)
    kept = psnr(u8(restorer.restore(clean)), gt)
    assert kept > CLEAN_KEPT, kept


def test_cpu_restorer_runs_the_inference_form_and_leaves_the_network_as_trained():
    from ramir.archs.nafnet import FoldedNAFBlock, NAFBlock

    torch.manual_seed(0)
    net = ramir.create_model("nafnet-s").eval()
    with torch.no_grad():
        for m in net.modules():  # residual scales away from zero, so that every block contributes
            if isinstance(m, NAFBlock):
                m.beta.uniform_(0.1, 0.3)
                m.gamma.uniform_(0.1, 0.3)
    r = Restorer(net, torch.device("cpu"), tile=0, backend="torch")
    assert any(isinstance(m, FoldedNAFBlock) for m in r._forward.modules())
    assert r.network is net and not any(isinstance(m, FoldedNAFBlock) for m in net.modules())
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        expected = denormalize(net(normalize(x))).clamp(0, 1)
    # 1e-5 on [0, 1]: the folding bound of tests/test_nafnet.py (measured 2e-7 of the output's magnitude)
    assert (r.restore(x) - expected).abs().max() < 1e-5
    # reduced precision keeps the blocks as trained (where torch has no bf16 path it says so and runs fp32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = Restorer(net, torch.device("cpu"), tile=0, backend="torch", precision="bf16")
    if bf16.precision == "bf16":
        assert not any(isinstance(m, FoldedNAFBlock) for m in bf16._forward.modules())
