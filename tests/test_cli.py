import csv
import shutil

from PIL import Image

from demo.predict import COLUMNS, main
from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES


def test_batch_csv(tmp_path, capsys):
    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    shutil.copy(ASTRONAUT, photos / "astronaut.jpg")
    shutil.copy(GROUP, tmp_path / "photos" / "group.jpg")
    Image.new("RGB", (300, 200), (30, 90, 30)).save(photos / "lawn.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "results.csv"

    main([str(tmp_path / "photos"), "--out", str(out), "--offline"])

    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == COLUMNS
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].split("/")[-1], []).append(row)
    group = by_file["group.jpg"]
    assert len(group) == 2 * GROUP_FACES and {r["model"] for r in group} == {"a", "b"}
    assert [r["face"] for r in group[::2]] == [str(i) for i in range(1, GROUP_FACES + 1)]
    scores = [float(r["det_score"]) for r in group[::2]]
    assert scores == sorted(scores, reverse=True)
    (astro_a, astro_b) = by_file["astronaut.jpg"]
    for row in (astro_a, astro_b):
        assert float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"]) + 1
        assert row["gender"] in ("male", "female") and 0 <= float(row["p_female"]) <= 1
        assert float(row["x1"]) < float(row["x2"])
    (lawn,) = by_file["lawn.png"]
    assert lawn["face"] == "" and "No face found" in lawn["note"]
    (broken,) = by_file["broken.jpg"]
    assert broken["error"] and broken["model"] == ""
    assert "3 image(s) written" in capsys.readouterr().out


def test_one_model_only(tmp_path):
    out = tmp_path / "a.csv"
    main([str(ASTRONAUT), "--out", str(out), "--models", "a", "--offline"])
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == ["a"]


def test_batch_csv_scored_against_the_labels(tiny_pack, utk_folder, ff_folder, tmp_path):
    """The way held-out photos are judged: demo.predict on the raw photos, then scored by file name."""
    import json
    from contextlib import redirect_stdout
    from io import StringIO

    from tools.score_predictions import main as score_main

    out = tmp_path / "preds.csv"
    main([str(utk_folder), str(ff_folder), "--out", str(out), "--offline"])
    buffer = StringIO()
    with redirect_stdout(buffer):
        score_main([str(out), "--labels", str(tiny_pack / "splits.csv")])
    report = json.loads(buffer.getvalue())
    utk, ff = report["a/utkface"], report["b/fairface"]
    assert utk["photos"] == 17 and 1 <= utk["missed"] <= 3 and utk["age_mae"] >= 0  # the corrupt file is missed
    assert ff["photos"] == 12 and 0 <= ff["age_group_exact"] <= ff["age_group_within_one"] <= 1
