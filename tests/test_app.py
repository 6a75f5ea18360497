"""The app over HTTP: a real launched Gradio server, driven with gradio_client."""

import io
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def test_photo_gives_boxes_table_and_crops(client):
    annotated, table, crops, note = client.predict(handle_file(str(GROUP)), api_name="/predict")
    assert Image.open(annotated).size == Image.open(GROUP).size
    rows = table["data"]
    assert len(rows) == GROUP_FACES and rows[0][0] == "#1"
    assert table["headers"][2:] == ["A age (80 % range)", "A gender", "B age (80 % range)", "B gender"]
    assert len(crops) == GROUP_FACES
    assert note == f"{GROUP_FACES} face(s) found."


def test_no_face_gives_a_note(client, tmp_path):
    path = tmp_path / "wall.jpg"
    Image.new("RGB", (400, 300), (200, 180, 150)).save(path)
    _, table, crops, note = client.predict(handle_file(str(path)), api_name="/predict")
    assert table["data"] in ([], [["", "", "", "", "", ""]]) and crops == []
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


def test_bad_uploads_get_clear_errors_and_the_server_keeps_answering(client, tmp_path):
    messages = ("empty", "not an image", "damaged or truncated", "megapixels")
    for path, message in zip(_bad_files(tmp_path), messages):
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(path)), api_name="/predict")
        _, table, _, _ = client.predict(handle_file(str(ASTRONAUT)), api_name="/predict")
        assert len(table["data"]) == 1


def test_model_sources_are_shown(server):
    url, demo = server
    config = demo.get_config_file()
    texts = [c.get("props", {}).get("value", "") for c in config["components"]]
    assert any("local weights/model_a (offline mode)" in str(t) for t in texts)


def test_minimum_detection_score_is_an_input(client):
    _, table, _, note = client.predict(handle_file(str(GROUP)), 1.0, api_name="/predict")
    assert table["data"] in ([], [["", "", "", "", "", ""]])
    assert f"{GROUP_FACES} detection(s) scored below the minimum detection score 1.00" in note


def test_cached_outputs_are_written_whole(tmp_path):
    """Same answer twice: one file, written once, never rewritten in place while it may be served."""
    from gradio import processing_utils

    from demo.ui import write_cached_images_atomically

    write_cached_images_atomically()
    image = Image.open(ASTRONAUT).convert("RGB")
    first = processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg")
    mtime = Path(first).stat().st_mtime_ns
    second = processing_utils.save_pil_to_cache(image, str(tmp_path), format="jpeg")
    assert first == second and Path(first).stat().st_mtime_ns == mtime
    assert Image.open(first).size == image.size and not list(tmp_path.rglob("*.tmp"))
