"""The README's picture of the app: the shipped models (weights/, offline) on the example group photo.

    python -m tools.screenshot --out reports/app.jpg
    python -m tools.screenshot --width 390 --out reports/app_phone.jpg     # as a phone shows it

Serves the app on a free loopback port, uploads the photo in headless Chromium (Debian's
`chromium`, driven by Playwright, as tests/test_browser.py does), waits for the note that
reports the faces found and saves the whole page as a JPEG.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

from demo.faces import FaceDetector
from demo.predictor import Predictor
from demo.sources import load_models, specs_from_env
from demo.ui import build_demo, launch
from tools.chromium import CHROMIUM, QUIET_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def screenshot(photo: Path, out: Path, chromium: Path, width: int = 1200) -> None:
    from playwright.sync_api import sync_playwright

    models, sources = load_models(specs_from_env(), offline=True)
    demo = build_demo(Predictor(models, FaceDetector()), sources=sources)
    _, url, _ = launch(demo, "127.0.0.1", None, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=QUIET_FLAGS)
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            page.wait_for_function("() => document.querySelector('#note')?.innerText.includes('face(s) found')",
                                   timeout=120_000)
            page.wait_for_timeout(1500)  # let the crops gallery finish loading its images
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        demo.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").save(out, quality=85)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", type=Path, default=ROOT / "demo" / "examples" / "group.jpg")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "app.jpg")
    p.add_argument("--chromium", type=Path, default=CHROMIUM)
    p.add_argument("--width", type=int, default=1200, help="the browser window's width in CSS pixels")
    a = p.parse_args(argv)
    screenshot(a.photo, a.out, a.chromium, a.width)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
