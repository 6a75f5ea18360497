"""The app in a real headless Chromium: a photo upload, and a fake camera streaming a face."""

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES
from tools.chromium import CHROMIUM, QUIET_FLAGS

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


def write_y4m(photo: Path, path: Path, frames: int = 20, size=(640, 480)) -> Path:
    """A photo drifting a few pixels per frame, as a 4:2:0 Y4M video: Chromium's fake camera.

    The drift makes every annotated frame different, as with a real camera, so the test can
    tell a new frame from the previous one.
    """
    image = Image.open(photo).convert("RGB")
    image.thumbnail((size[0] - 80, size[1]))
    clip = []
    for i in range(frames):
        canvas = Image.new("RGB", size, (40, 40, 40))
        canvas.paste(image, (4 * i, (size[1] - image.height) // 2))
        clip.append(canvas)
    return write_frames_y4m(clip, path)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    video = write_y4m(ASTRONAUT, tmp_path_factory.mktemp("camera") / "face.y4m")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=QUIET_FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                f"--use-file-for-fake-video-capture={video}"],
        )
        yield browser
        browser.close()


def test_upload_shows_annotated_photo_and_table(server, browser, tmp_path):
    page = browser.new_page()
    page.goto(server[0])
    page.locator("input[type=file]").first.set_input_files(str(GROUP))
    page.locator("#annotated img").first.wait_for(timeout=60_000)
    # The table's visible text (Gradio also renders a hidden copy for sizing).
    page.wait_for_function(f"() => document.querySelector('#faces-table').innerText.includes('#{GROUP_FACES}')",
                           timeout=30_000)
    text = page.locator("#faces-table").inner_text()
    assert all(f"#{n}" in text for n in range(1, GROUP_FACES + 1)) and f"#{GROUP_FACES + 1}" not in text
    page.wait_for_function("() => document.querySelector('#note')?.innerText.includes('face(s) found')")
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)
    page.close()


def test_webcam_stream_returns_annotated_frames(server, browser):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.goto(server[0])
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("button:visible", has_text="Record").click()
    live = page.locator("#live img")
    live.first.wait_for(timeout=60_000)
    first = live.first.get_attribute("src")
    page.wait_for_function(
        "(first) => { const img = document.querySelector('#live img'); return img && img.src !== first; }",
        arg=first, timeout=60_000,
    )
    # The session's rate, measured as its frames are served.
    page.wait_for_function("() => (document.querySelector('#live-rate')?.innerText || '').includes('frames a second')",
                           timeout=30_000)
    context.close()


def test_clicking_an_example_runs_it(server, browser):
    page = browser.new_page()
    page.goto(server[0])
    page.locator("img[src*='group.jpg']").first.click()
    page.wait_for_function(f"() => document.querySelector('#note')?.innerText.includes('{GROUP_FACES} face(s) found')",
                           timeout=60_000)
    page.close()


def test_the_slider_reruns_the_photo_from_the_keyboard_and_a_typed_value(server, browser):
    page = browser.new_page()
    page.goto(server[0])
    page.locator("input[type=file]").first.set_input_files(str(GROUP))
    note = "document.querySelector('#note')?.innerText || ''"
    page.wait_for_function(f"() => ({note}).includes('{GROUP_FACES} face(s) found')", timeout=60_000)
    page.locator("input[type=range]").first.focus()
    page.keyboard.press("End")  # to the slider's maximum, 1.00, by key
    page.wait_for_function(f"() => ({note}).includes('minimum detection score 1.00')", timeout=60_000)
    number = page.locator("input[type=number]").first
    number.fill("0.9")
    number.press("Enter")
    page.wait_for_function(f"() => ({note}).includes('{GROUP_FACES} face(s) found')", timeout=60_000)
    page.close()


def test_face_crops_stay_thumbnails_with_their_captions_whole(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(server[0])
    captions = """() => [...document.querySelectorAll('#crops *')]
        .filter(e => e.children.length === 0 && e.innerText && e.innerText.startsWith('#'))"""
    for photo, faces in ((ASTRONAUT, 1), (GROUP, GROUP_FACES)):
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.wait_for_function(f"() => (document.querySelector('#note')?.innerText || '').includes('{faces} face(s)')",
                               timeout=60_000)
        page.wait_for_function(f"() => ({captions})().length === {faces}", timeout=30_000)
        widths = page.locator("#crops img").evaluate_all("images => images.map(i => i.getBoundingClientRect().width)")
        assert len(widths) == faces and max(widths) < 300  # one face is not blown up to the gallery's width
        cut = page.evaluate(f"() => ({captions})().filter(e => e.scrollWidth > e.clientWidth).length")
        assert cut == 0  # every caption shows whole
    page.close()


def test_a_still_face_on_a_noisy_camera_keeps_its_number_and_its_age(server, browser, tmp_path):
    """The fake camera films the astronaut still, with fresh sensor noise on every frame (the steadiness
    tool's clip); after the tracker's window has filled, the ages shown stay within a year."""
    from demo.tracking import WINDOW
    from tools.webcam_steadiness import noisy_clip

    video = write_frames_y4m(noisy_clip(ASTRONAUT, frames=30, noise=4.0), tmp_path / "still.y4m")
    with filming(browser, video, server[0]) as page:
        rows, last = [], None
        while len(rows) < WINDOW + 10:
            page.wait_for_function("(last) => { const t = document.querySelector('#live-table');"
                                   " return t && t.innerText.includes('#1') && t.innerText !== last; }",
                                   arg=last, timeout=60_000)
            last = page.locator("#live-table").inner_text()
            rows.append(face_rows(last))
    steady = rows[WINDOW:]
    assert all(len(faces) == 1 and faces[0][0] == "#1" for faces in steady)  # one face, keeping its number
    for column in (2, 4):  # A's and B's age, "38 (27-53)"
        ages = [int(faces[0][column].split()[0]) for faces in steady]
        assert max(ages) - min(ages) <= 1, ages


@contextmanager
def filming(browser, video: Path, url: str):
    """The app's webcam tab recording `video` in a Chromium of its own (the module's films the drifting photo)."""
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM), args=QUIET_FLAGS + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        page = chromium.new_context(permissions=["camera"]).new_page()
        page.goto(url)
        page.get_by_role("tab", name="Webcam").click()
        page.get_by_text("Click to Access Webcam").click()
        page.locator("button:visible", has_text="Record").click()
        yield page
    finally:
        chromium.close()


def face_rows(table_text: str, columns: int = 7) -> list[list[str]]:
    """The rows of a faces table from its text (one cell a line): each starts at its '#N' cell."""
    cells = [line.strip() for line in table_text.splitlines() if line.strip()]
    return [cells[i : i + columns] for i, cell in enumerate(cells) if cell.startswith("#")]


def write_frames_y4m(frames: list, path: Path) -> Path:
    """Frames as a 4:2:0 Y4M video, Chromium's fake camera (which loops it)."""
    width, height = frames[0].size
    chunks = [f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()]
    for frame in frames:
        y, cb, cr = (np.asarray(c) for c in frame.convert("YCbCr").split())
        chroma = [np.asarray(Image.fromarray(c).resize((width // 2, height // 2))) for c in (cb, cr)]
        chunks.append(b"FRAME\n" + y.tobytes() + chroma[0].tobytes() + chroma[1].tobytes())
    path.write_bytes(b"".join(chunks))
    return path


def test_the_live_view_is_mirrored_like_the_camera_preview(server, browser, tmp_path):
    """A camera image white on its left: the preview mirrors it (white on the right), and so does the live view."""
    import base64
    import io

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = 255
    video = write_frames_y4m([Image.fromarray(frame)] * 5, tmp_path / "halves.y4m")
    with filming(browser, video, server[0]) as page:
        page.locator("#live img").first.wait_for(timeout=60_000)
        src = page.locator("#live img").first.get_attribute("src")
        data = page.evaluate("""async (src) => {
            const bytes = new Uint8Array(await (await fetch(src)).arrayBuffer());
            let s = ''; for (const x of bytes) s += String.fromCharCode(x); return btoa(s); }""", src)
        # The preview mirrors the camera with CSS; check it does, so the comparison means something.
        transform = page.evaluate("() => getComputedStyle(document.querySelector('video')).transform")
    live = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), dtype=float)
    assert transform.startswith("matrix(-1")  # the preview: mirrored
    assert live[:, :300].mean() < 60 and live[:, 340:].mean() > 190  # the live view: mirrored too
