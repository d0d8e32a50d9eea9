"""The web page says what the routed model did and restores again with another choice (real browser)."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from ramir.inference import load
from test_chain import flat, tiny_routed
from test_web import CHROMIUM, CHROMIUM_ARGS, serving


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def url():
    with serving(load(tiny_routed(max_steps=1), device="cpu", tile=0), model_name="tiny-routed") as base:
        yield base


def _post(url: str, body: bytes) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_api_reports_the_decision_and_takes_a_forced_choice(url):
    info = json.loads(urllib.request.urlopen(url + "/api/info", timeout=10).read())
    assert info["experts"] == ["dim", "lift"]
    body = _png(flat(0.9))
    status, headers, auto = _post(url + "/api/restore", body)
    assert status == 200 and headers["X-Ramir-Experts"] == "dim"
    assert headers["X-Ramir-Applied"].startswith("dim (p")
    status, headers, forced = _post(url + "/api/restore?expert=lift", body)
    assert status == 200 and headers["X-Ramir-Applied"] == "lift (as asked)"
    a = np.asarray(Image.open(io.BytesIO(auto)), dtype=np.float32)
    b = np.asarray(Image.open(io.BytesIO(forced)), dtype=np.float32)
    assert a.mean() < 130 < b.mean()  # dimmed vs lifted
    status, _, err = _post(url + "/api/restore?expert=blur", body)
    assert status == 400 and b"choose from dim, lift" in err


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)")
def test_page_shows_what_was_applied_and_restores_again_with_another_choice(url, tmp_path):
    from playwright.sync_api import sync_playwright

    src = tmp_path / "bright.png"
    src.write_bytes(_png(flat(0.9, 40, 56)))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('tiny-routed')")
            page.set_input_files("#file", str(src))
            page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
            assert page.inner_text("#applied").startswith("applied: dim (p")
            assert page.is_visible("#choose")
            options = page.eval_on_selector_all("#expert-choice option", "els => els.map(e => e.value)")
            assert options == ["", "dim", "lift", "none"]
            page.select_option("#expert-choice", "lift")
            page.click("#again")
            page.wait_for_function(
                "document.body.dataset.state === 'done' && "
                "document.getElementById('applied').textContent.includes('lift')", timeout=60_000)
            assert page.inner_text("#applied") == "applied: lift (as asked)"
            page.select_option("#expert-choice", "none")
            page.click("#again")
            page.wait_for_function("document.getElementById('applied').textContent.includes('unchanged')",
                                   timeout=60_000)
        finally:
            browser.close()
