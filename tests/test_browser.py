"""The app in a real headless Chromium: a photo upload, and a fake camera streaming a face."""

import os
import re
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
    # The session's rate, measured as its frames are served, and what is left of its turn: no bar of Gradio's
    # counting the stream's longer time limit.
    page.wait_for_function("() => (document.querySelector('#live-rate')?.innerText || '').includes('frames a second')",
                           timeout=30_000)
    assert re.search(r"\b(1[01]\d|120) s left of your turn", page.locator("#live-rate").inner_text())
    bar = page.locator("#camera .streaming-bar")
    assert bar.count() == 1 and not bar.is_visible()
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
    with filming_pages(browser, video, url, 1) as (page,):
        page.locator("button:visible", has_text="Record").click()
        yield page


def face_rows(table_text: str, columns: int = 6) -> list[list[str]]:
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


@pytest.mark.parametrize("busy", [False, True], ids=["quiet", "beside_a_busy_process"])
def test_a_face_sliding_across_the_camera_keeps_one_number(server, browser, tmp_path, busy):
    """The fake camera films the portrait sliding 320 px left and right every 4 s, three face widths a second
    (about one a frame at the test server's 3 frames a second); the live table shows one face, always #1.
    Also beside a process keeping both cores busy, where frames come fewer and further apart."""
    import subprocess
    import sys

    from tools.clips import frame_at, offsets, portrait

    face = portrait(ASTRONAUT)
    shifts = offsets(span=320, period_s=4.0, fps=10, frames=40)  # one whole period: the camera's loop is seamless
    video = write_frames_y4m([frame_at(face, s) for s in shifts], tmp_path / "sliding.y4m")
    spin = "import numpy\na = numpy.random.rand(600, 600)\nwhile True:\n    a @ a"
    hog = subprocess.Popen([sys.executable, "-c", spin], env={**os.environ, "OMP_NUM_THREADS": "2"}) if busy else None
    try:
        _slide_keeps_one_number(browser, video, server[0])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def _slide_keeps_one_number(browser, video, url: str) -> None:
    with filming(browser, video, url) as page:
        tables, last = [], None
        while len(tables) < 15:
            page.wait_for_function("(last) => { const t = document.querySelector('#live-table');"
                                   " return t && t.innerText.includes('#') && t.innerText !== last; }",
                                   arg=last, timeout=60_000)
            last = page.locator("#live-table").inner_text()
            tables.append(face_rows(last))
    assert all([row[0] for row in faces] == ["#1"] for faces in tables), tables


def test_three_streams_see_frames_or_their_place_in_line_and_a_turn_ends_with_a_message(shipped_models, predictor,
                                                                                         browser, tmp_path):
    """Two turns at once, 20 s each: three pages record at once; each sees frames or the waiting message
    within 5 s; a turn ends with a message, and the page that waited then gets frames. Stop is noticed."""
    import time

    from demo.live import StreamTurns
    from demo.ui import build_demo, launch

    demo = build_demo(predictor, sources=shipped_models[1], stream_every=0.3, turns=StreamTurns(slots=2, limit_s=20))
    _, url, _ = launch(demo, "127.0.0.1", None, prevent_thread_lock=True, quiet=True)
    video = write_y4m(ASTRONAUT, tmp_path / "face.y4m")
    status = "() => document.querySelector('#live-rate')?.innerText || ''"
    shown = f"() => !!document.querySelector('#live img') || ({status})().includes('Waiting for a turn')"
    try:
        with filming_pages(browser, video, url, 3) as pages:
            seconds = []
            for page in pages:
                started = time.monotonic()
                page.locator("button:visible", has_text="Record").click()
                page.wait_for_function(shown, timeout=30_000)
                seconds.append(time.monotonic() - started)
            print(f"seconds from Record to frames or the waiting message: {[round(x, 2) for x in seconds]}")
            assert max(seconds) < 5, seconds
            texts = [page.evaluate(status) for page in pages]
            waiting = [i for i, text in enumerate(texts) if "Waiting for a turn" in text]
            assert len(waiting) == 1 and "number 1 in line" in texts[waiting[0]], texts
            streaming = [pages[i] for i in range(3) if i not in waiting]
            streaming[0].wait_for_function(f"() => ({status})().includes('are up')", timeout=60_000)
            pages[waiting[0]].wait_for_function(f"() => ({status})().includes('frames a second')", timeout=30_000)
            streaming[1].locator("button:visible", has_text="Stop").click()
            streaming[1].wait_for_function(f"() => ({status})().startsWith('Stopped')", timeout=15_000)
    finally:
        demo.close()


@contextmanager
def filming_pages(browser, video: Path, url: str, count: int):
    """`count` pages of a Chromium of their own filming `video`, each on the app's Webcam tab, the camera open."""
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM), args=QUIET_FLAGS + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        pages = []
        for _ in range(count):
            page = chromium.new_context(permissions=["camera"]).new_page()
            page.goto(url)
            page.get_by_role("tab", name="Webcam").click()
            page.get_by_text("Click to Access Webcam").click()
            page.locator("button:visible", has_text="Record").wait_for(timeout=30_000)
            pages.append(page)
        yield pages
    finally:
        chromium.close()


def test_a_refused_camera_is_explained_on_the_page(server, browser):
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM),
                                           args=QUIET_FLAGS + ["--use-fake-device-for-media-stream"])
    try:
        page = chromium.new_context().new_page()  # no camera permission, and no one to accept the prompt
        page.goto(server[0])
        page.get_by_role("tab", name="Webcam").click()
        page.get_by_text("Click to Access Webcam").click()
        page.wait_for_function("() => (document.querySelector('#camera-message')?.innerText || '')"
                               ".includes('The camera was refused')", timeout=30_000)
    finally:
        chromium.close()


def test_the_photo_tab_reads_on_a_phone(server, browser, tmp_path):
    """390 px wide: the page does not scroll sideways, and no table cell breaks its words over lines."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server[0])
    page.locator("input[type=file]").first.set_input_files(str(GROUP))
    page.wait_for_function(f"() => (document.querySelector('#note')?.innerText || '').includes('{GROUP_FACES} face')",
                           timeout=60_000)
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    # Per cell, the lines its text runs over (the text's own boxes: a header also holds a sort button).
    lines = page.evaluate("""() => [...document.querySelectorAll('#faces-table th, #faces-table .body-cell')]
        .filter(cell => cell.innerText.trim() && cell.offsetParent !== null)
        .map(cell => { const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), tops = new Set();
                       for (let node = walk.nextNode(); node; node = walk.nextNode()) {
                         if (!node.textContent.trim()) continue;
                         const range = document.createRange(); range.selectNodeContents(node);
                         for (const r of range.getClientRects()) if (r.width) tops.add(Math.round(r.top)); }
                       return [cell.innerText.trim(), tops.size]; })""")
    assert len(lines) >= 6 * GROUP_FACES and all(count == 1 for _, count in lines), lines
    # Each crop's caption whole (wrapped, not cut off with an ellipsis).
    captions = page.evaluate("""() => [...document.querySelectorAll('#crops .caption-label')]
        .map(e => [e.innerText, e.scrollWidth <= e.clientWidth + 1])""")
    assert len(captions) == GROUP_FACES and all(whole for _, whole in captions), captions
    page.close()


def test_ticking_the_maps_shows_a_pair_per_model_per_face(server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(server[0])
    page.locator("input[type=file]").first.set_input_files(str(GROUP))
    page.wait_for_function(f"() => (document.querySelector('#note')?.innerText || '').includes('{GROUP_FACES} face')",
                           timeout=60_000)
    assert page.locator("#saliency img").count() == 0  # off by default
    page.locator("#explain input[type=checkbox]").check()  # re-runs the photo shown, with the maps
    captions = """() => [...document.querySelectorAll('#saliency *')]
        .filter(e => e.children.length === 0 && (e.innerText || '').startsWith('#')).map(e => e.innerText)"""
    page.wait_for_function(f"() => ({captions})().length === {2 * GROUP_FACES}", timeout=60_000)
    # Each pair captioned with the answer its maps explain (tests/test_saliency.py: the one shown).
    shown = sorted(page.evaluate(captions))
    assert [c.split(":")[0] for c in shown] == sorted(f"#{n} · {k}" for n in range(1, GROUP_FACES + 1) for k in "AB")
    assert all(re.fullmatch(r"#\d · [AB]: age \d+-\d+ \| (female|male) \d+ %", c) for c in shown), shown
    # Every map in view of the page's own scroll: no box of the gallery scrolls inside (Gradio caps one at 55 % of
    # the window's height).
    inner = page.evaluate("""() => [...document.querySelectorAll('#saliency, #saliency *')]
        .filter(e => e.scrollHeight > e.clientHeight + 2 && getComputedStyle(e).overflowY !== 'visible')
        .map(e => [e.className, e.scrollHeight, e.clientHeight])""")
    assert inner == [], inner
    assert page.locator("#saliency img").count() >= 2 * GROUP_FACES
    page.close()


def test_a_clip_comes_back_as_an_annotated_video_an_age_plot_and_a_csv(server, browser, tmp_path):
    from tests.test_video import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(server[0])
    page.get_by_role("tab", name="Video").click()
    page.locator("#clip input[type=file]").set_input_files(str(clip))
    page.get_by_text("clip.mp4").first.wait_for(timeout=30_000)  # the upload, named
    page.get_by_role("button", name="Judge the clip").click()
    page.wait_for_function("() => (document.querySelector('#video-note')?.innerText || '').includes('frames judged')",
                           timeout=120_000)
    page.locator("#annotated-video video").first.wait_for(timeout=30_000)
    duration = page.wait_for_function("""() => { const v = document.querySelector('#annotated-video video');
        return v && v.readyState >= 1 && v.duration > 0 ? v.duration : null; }""", timeout=30_000).json_value()
    assert 1.5 <= duration <= 2.5  # the clip's 2 s: the browser decodes the annotated video
    page.locator("#age-plot canvas, #age-plot svg").first.wait_for(timeout=30_000)
    assert "clip_faces.csv" in page.locator("#video-csv").inner_text().replace("\n", "")
    page.close()
    # A file that is no video: the tab's own message, and no popup of the player's beside it.
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00" * 3000)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(server[0])
    page.get_by_role("tab", name="Video").click()
    page.locator("#clip input[type=file]").set_input_files(str(noise))
    page.get_by_text("noise.mp4").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Judge the clip").click()
    page.wait_for_function("() => (document.querySelector('#video-note')?.innerText || '').includes('Could not use')",
                           timeout=60_000)
    assert page.get_by_text("Video not playable").count() == 0
    page.close()

