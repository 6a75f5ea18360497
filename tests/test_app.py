"""The app over HTTP: a real launched Gradio server, driven with gradio_client."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES, HOPPER


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def test_photo_gives_boxes_table_crops_and_its_results_as_data(client):
    annotated, table, crops, note, faces, files, looks = client.predict(handle_file(str(GROUP)), api_name="/predict")
    assert Image.open(annotated).size == Image.open(GROUP).size
    rows = table["data"]
    assert len(rows) == GROUP_FACES and rows[0][0] == "#1"
    assert table["headers"][2:] == ["A age (80 % range)", "A gender", "B age (80 % range)", "B gender"]
    assert len(crops) == GROUP_FACES
    assert note.startswith(f"{GROUP_FACES} face(s) found.")
    # Where the two models disagree on gender, the note says which to trust more, and why (the model cards).
    # (The shipped models agree on every face of this photo; the sentence itself is checked below.)
    # An "unsure" answer disagrees with neither side.
    sides = [(row[3].split()[0], row[5].split()[0]) for row in rows]
    disagree = [row for row, (a, b) in zip(rows, sides) if a != b and "unsure" not in (a, b)]
    assert all(f"{row[0]}: the models disagree on gender" in note for row in disagree)
    assert note.count("disagree") == len(disagree)
    # The same answers as data: per face, numbered left to right, and as the batch CLI's CSV and as JSON.
    assert [f["face"] for f in faces] == list(range(1, GROUP_FACES + 1))
    lefts = [f["box"][0] for f in faces]
    assert lefts == sorted(lefts) and all(0.9 <= f["detection_score"] <= 1 for f in faces)
    for face, row in zip(faces, rows):
        for key, column in (("a", 2), ("b", 4)):
            answer = face["models"][key]
            shown, shown_range = row[column].split()
            assert abs(answer["age"] - int(shown)) <= 0.55  # the table rounds what the data keeps to 0.1
            assert shown_range == f"({answer['age_low']}-{answer['age_high']})"
            assert 0 <= answer["p_female"] <= 1 and answer["gender"] in ("female", "male", "unsure")
            assert row[column + 1].split()[0] == answer["gender"]  # the table says what the data says
    names = sorted(Path(f).name for f in files)
    assert names == ["group_faces.csv", "group_faces.json"]
    import csv
    import json

    csv_rows = list(csv.DictReader(open(next(f for f in files if f.endswith(".csv")))))
    assert len(csv_rows) == 2 * GROUP_FACES and csv_rows[0]["file"] == "group.jpg"
    assert json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())["faces"] == faces


def test_no_face_gives_a_note(client, tmp_path):
    path = tmp_path / "wall.jpg"
    Image.new("RGB", (400, 300), (200, 180, 150)).save(path)
    _, table, crops, note, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    assert table["data"] in ([], [[""] * 6]) and crops == []
    assert "No face found" in note


def _bad_files(tmp_path):
    photo = Image.open(ASTRONAUT)
    truncated = io.BytesIO()
    photo.save(truncated, format="JPEG")
    files = {
        "empty.jpg": b"",
        "notes.txt": b"just some text",
        "truncated.jpg": truncated.getvalue()[:4000],
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)
    paths.append(bomb)
    return paths


def test_bad_uploads_get_clear_messages_in_the_page_and_the_server_keeps_answering(client, tmp_path):
    messages = ("empty", "not an image", "damaged or truncated", "megapixels")
    for path, message in zip(_bad_files(tmp_path), messages):
        annotated, table, crops, note, *_ = client.predict(handle_file(str(path)), api_name="/predict")
        assert note.startswith("**Could not use this file:**") and message in note  # stays on the page
        assert annotated is None and crops == [] and table["data"] in ([], [[""] * 7])
        _, table, _, _, *_ = client.predict(handle_file(str(ASTRONAUT)), api_name="/predict")
        assert len(table["data"]) == 1


@pytest.mark.parametrize("size", [(10, 10), (19, 400)])
def test_an_image_too_small_for_a_face_says_so(client, tmp_path, size):
    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (120, 100, 90)).save(path)
    _, table, _, note, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    assert f"{size[0]}x{size[1]} pixels: too small to hold a face" in note


def test_a_16_bit_grayscale_png_reaches_the_models_in_its_grey_levels(client, tmp_path):
    grey = np.asarray(Image.open(ASTRONAUT).convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    annotated, table, _, _, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    assert len(table["data"]) == 1  # blown to black and white by a conversion, the face was lost
    shown = np.asarray(Image.open(annotated).convert("L"), dtype=float)
    assert 40 < shown.std() and len(np.unique(shown.round(-1))) > 10  # grey levels, not two


def test_a_transparent_area_is_shown_on_white_whatever_pixels_it_hides(client, tmp_path):
    rgba = np.asarray(Image.open(ASTRONAUT).convert("RGBA")).copy()
    half = rgba.shape[1] // 2
    rgba[:, half:] = (0, 0, 0, 0)  # transparent black on the right
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    annotated, _, _, _, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    right = np.asarray(Image.open(annotated).convert("RGB"))[:, half + 20 :]
    assert right.mean() > 240


def test_a_close_up_gets_its_label_inside_the_photo(client, tmp_path):
    from demo.draw import COLOURS

    path = tmp_path / "close_up.jpg"
    Image.open(HOPPER).convert("RGB").crop((170, 115, 360, 345)).resize((200, 200)).save(path, quality=95)
    annotated, table, _, _, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    assert len(table["data"]) == 1
    pixels = np.asarray(Image.open(annotated).convert("RGB"), dtype=int)
    label = (np.abs(pixels - np.array(COLOURS[0])).sum(axis=-1) < 60).sum(axis=1)  # label colour per row
    assert label.max() > 60  # a filled label band (the box's outline gives a few pixels a row at most)


def test_model_sources_and_measured_accuracy_are_shown(server):
    url, demo = server
    config = demo.get_config_file()
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "the app's own copy, weights/model_a" in texts and "offline" not in texts
    # From each model's card: Model B's numbers, as weights/model_b/README.md records them.
    assert ("measured on test faces: UTKFace: age MAE 4.65 years, gender 93.8 %; FairFace: age group 57.9 % exact"
            in texts)


def test_minimum_detection_score_is_an_input(client):
    _, table, _, note, *_ = client.predict(handle_file(str(GROUP)), 1.0, api_name="/predict")
    assert table["data"] in ([], [[""] * 6])
    assert f"{GROUP_FACES} detection(s) scored below the minimum detection score 1.00" in note


def test_cached_outputs_are_written_whole(tmp_path):
    """Same answer twice: one file, written once, never rewritten in place while it may be served."""
    from gradio import processing_utils

    from demo.ui import write_cached_images_atomically

    write_cached_images_atomically()
    image = Image.open(ASTRONAUT).convert("RGB")
    first = processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg")
    before = Path(first).stat()
    os.utime(first, (1, 1))  # as if written long ago
    second = processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg")
    after = Path(first).stat()
    # Written once (the same file, not a replacement), its time refreshed so the cache sweep keeps it.
    assert first == second and after.st_ino == before.st_ino and after.st_mtime > 1_000_000
    assert Image.open(first).size == image.size and not list(tmp_path.rglob("*.tmp"))


def test_the_disagreement_note_quotes_the_shipped_models_cards():
    from demo.cards import read_measured
    from demo.predictor import ModelAnswer
    from demo.sources import LOCAL_DIRS
    from demo.ui import gender_disagreement

    accuracy = {key: read_measured(folder).gender_accuracy for key, folder in LOCAL_DIRS.items()}
    answers = {"a": ModelAnswer(30, 25, 36, 0.9), "b": ModelAnswer(31, 26, 37, 0.2)}
    assert gender_disagreement(answers, accuracy) == (
        "the models disagree on gender. On the test faces of their model cards, B got 92.7 % of genders right "
        "(A 92.2 %): trust B more.")


def test_gender_disagreement_names_the_model_measured_better_and_says_what_its_numbers_are():
    from demo.predictor import ModelAnswer
    from demo.ui import gender_disagreement

    female, male = ModelAnswer(30, 25, 36, 0.9), ModelAnswer(31, 26, 37, 0.2)
    assert gender_disagreement({"a": female, "b": female}, {"a": 0.9, "b": 0.8}) == ""
    assert gender_disagreement({"a": female, "b": male}, {"a": 0.85, "b": 0.9}) == (
        "the models disagree on gender. On the test faces of their model cards, B got 90.0 % of genders right "
        "(A 85.0 %): trust B more.")
    assert gender_disagreement({"a": female, "b": male}, {"a": None, "b": 0.9}) == "the models disagree on gender."


def test_the_cache_sweep_deletes_old_files_but_the_examples(tmp_path):
    from demo.ui import sweep_once

    old, recent, example = tmp_path / "a" / "old.jpeg", tmp_path / "b" / "recent.jpeg", tmp_path / "c" / "ex.jpg"
    for path in (old, recent, example):
        path.parent.mkdir()
        path.write_bytes(b"x")
    for path in (old, example):
        os.utime(path, (1, 1))  # written long ago
    assert sweep_once(tmp_path, age_s=60, keep={str(example.resolve())}) == 1
    assert not old.exists() and recent.exists() and example.exists()


def test_launch_starts_the_cache_sweep_before_serving(monkeypatch):
    """app.py's launch blocks until the server stops: the sweep must already be running by then."""
    import threading

    from demo import ui

    class Blocks:  # what launch needs of gr.Blocks, recording what runs when it starts serving
        blocks: dict = {}

        def queue(self, **kwargs):
            return self

        def launch(self, **kwargs):
            self.sweeping = any(t.name == "cache-sweep" for t in threading.enumerate())
            self.kwargs = kwargs

    demo = Blocks()
    ui.launch(demo, "127.0.0.1", 7860)
    assert demo.sweeping and demo.kwargs["state_session_capacity"] == ui.SESSIONS_KEPT


def test_the_usage_pages_client_example_runs_against_the_launched_app(server, capsys, monkeypatch):
    """docs/usage.md's gradio_client example, as written, against this test's server."""
    import re

    root = Path(__file__).resolve().parents[1]
    usage = (root / "docs" / "usage.md").read_text()
    (code,) = re.findall(r"```python\n(from gradio_client import.*?)```", usage, flags=re.S)
    assert 'Client("http://127.0.0.1:7860/")' in code
    monkeypatch.chdir(root)  # the example's photo path is relative to the repository
    exec(code.replace("http://127.0.0.1:7860/", server[0]), {})
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("Loaded as API")]
    assert len(lines) == GROUP_FACES and [line.split()[0] for line in lines] == [str(n) for n in range(1, 6)]
    assert all("'a': (" in line and "'b': (" in line for line in lines)


def test_every_api_output_and_input_has_a_name(client):
    """A program reads the outputs by name: none is Gradio's fallback `value_N`."""
    info = client.view_api(return_format="dict", print_info=False)
    assert {"/predict", "/stream", "/video"} <= set(info["named_endpoints"])
    for name, endpoint in info["named_endpoints"].items():
        labels = [p["label"] for p in endpoint["parameters"]] + [r["label"] for r in endpoint["returns"]]
        assert all(label and not label.startswith("value_") for label in labels), (name, labels)
    assert info["named_endpoints"]["/predict"]["returns"][4]["label"] == "faces"


def test_an_upload_larger_than_any_tab_accepts_is_refused_before_it_is_stored(server):
    """Posted straight to Gradio's upload route, as a script would: HTTP 413, and nothing of it in the cache."""
    import httpx
    from gradio.utils import get_upload_folder

    from demo.ui import UPLOAD_MAX_BYTES

    folder = Path(get_upload_folder())
    before = {p for p in folder.rglob("*") if p.is_file()}

    def body():  # multipart, streamed: the test never holds the file in memory
        yield b'--xx\r\nContent-Disposition: form-data; name="files"; filename="big.mp4"\r\n' \
              b"Content-Type: video/mp4\r\n\r\n"
        chunk = b"\0" * 1_000_000
        for _ in range(UPLOAD_MAX_BYTES // len(chunk) + 5):
            yield chunk
        yield b"\r\n--xx--\r\n"

    response = httpx.post(f"{server[0]}gradio_api/upload", content=body(), timeout=120,
                          headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    stored = {p for p in folder.rglob("*") if p.is_file()} - before
    assert not any(p.stat().st_size > UPLOAD_MAX_BYTES for p in stored)
