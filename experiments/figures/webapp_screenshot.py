"""Screenshot of the web app with a real restoration, for the README (``docs/webapp.png``).

    python -m experiments.figures.webapp_screenshot [--model CHECKPOINT] [--out docs/webapp.png]

Starts ``ramir serve``'s server in a thread with the same Restorer the CLI loads (the embedded default
model unless ``--model`` is given), opens the page in headless Chromium, uploads a noisy crop of
scikit-image's astronaut photo (Gaussian noise sigma 25, seed 0), waits for the result and saves a
screenshot of the page with the before/after slider in the middle.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def noisy_photo(path: Path, size: int = 320, sigma: float = 25.0) -> None:
    """A centre crop of skimage's astronaut with the paper's test noise (sigma on 0-255)."""
    from PIL import Image
    from skimage import data

    from ramir.data.degradations import degrade_for_test

    img = data.astronaut()
    y0, x0 = 40, (img.shape[1] - size) // 2
    clean = img[y0 : y0 + size, x0 : x0 + size].astype(np.float32) / 255
    noisy = degrade_for_test(clean, "noise", sigma, seed=0)
    Image.fromarray(np.rint(noisy * 255).astype(np.uint8)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the embedded default model)")
    parser.add_argument("--out", default="docs/webapp.png", help="screenshot path (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from ramir.cli.serve import load_restorer
    from ramir.errors import RamirError
    from ramir.fileio import atomic_path
    from ramir.web.server import make_server

    try:
        restorer = load_restorer(args.model, args.device, None)
    except RamirError as exc:
        print(f"webapp_screenshot: {exc}", file=sys.stderr)
        return 2
    name = getattr(restorer, "name", "") or "model"
    server = make_server(restorer, "127.0.0.1", 0, model_name=name)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photo = Path(tmp) / "astronaut_noisy.png"
            noisy_photo(photo)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 900, "height": 760}, device_scale_factor=1)
                    page.goto(url)
                    page.wait_for_function(
                        "document.getElementById('model-info').textContent.includes('model')"
                    )
                    started = time.perf_counter()
                    page.set_input_files("#file", str(photo))
                    page.wait_for_function(
                        "['done', 'error'].includes(document.body.dataset.state)", timeout=600_000
                    )
                    if page.evaluate("document.body.dataset.state") != "done":
                        print(f"webapp_screenshot: {page.inner_text('#error')}", file=sys.stderr)
                        return 1
                    page.fill("#slider", "50")
                    page.evaluate("document.activeElement.blur()")
                    with atomic_path(args.out) as shot:
                        page.screenshot(path=str(shot), full_page=True, type="png")
                finally:
                    browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"wrote {args.out} ({name}, restored in {time.perf_counter() - started:.1f} s incl. upload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
