import csv
import shutil

import pytest
from PIL import Image

from demo.export import COLUMNS
from demo.predict import main
from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES, PredictKiller


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
    lefts = [float(r["x1"]) for r in group[::2]]
    assert lefts == sorted(lefts)  # numbered left to right
    (astro_a, astro_b) = by_file["astronaut.jpg"]
    for row in (astro_a, astro_b):
        assert float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"]) + 1
        assert row["gender"] in ("male", "female") and 0 <= float(row["p_female"]) <= 1
        assert float(row["x1"]) < float(row["x2"])
    (lawn,) = by_file["lawn.png"]
    assert lawn["face"] == "" and "No face found" in lawn["note"]
    (broken,) = by_file["broken.jpg"]
    assert broken["error"] and broken["model"] == ""
    assert "3 file(s) written" in capsys.readouterr().out


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
    # The ranges as the CLI wrote them: each holds its own age, none 40 years wide; coverage per band.
    for entry in (utk, ff):
        assert entry["age_outside_range"] == 0 and entry["age_range_max_width"] <= 40
        assert 0 <= entry["age_range_coverage"] <= 1 and 0 <= entry["gender_unsure_share"] <= 1
    assert set(utk["age_range_coverage_by_age_band"]) <= {"1-2", "3-5", "6-12", "13-19", "20-29", "30-39", "40-49",
                                                          "50-59", "60-69", "70+"}
    assert 1 <= len(ff["age_range_coverage_by_age_group"]) and set(ff["age_range_coverage_by_age_group"]) <= {
        "0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"}


def _photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, source in enumerate([ASTRONAUT, GROUP, ASTRONAUT, GROUP, ASTRONAUT]):
        shutil.copy(source, photos / f"{i}_{source.name}")
    (photos / "3_broken.jpg").write_bytes(b"not a photo")
    return photos


def test_an_interrupted_run_continues_without_redoing_finished_photos(tmp_path, monkeypatch):
    photos = _photos(tmp_path)
    straight = tmp_path / "straight.csv"
    main([str(photos), "--out", str(straight), "--offline"])

    killer = PredictKiller(monkeypatch, at=3)  # the run dies during the third readable photo
    out = tmp_path / "resumed.csv"
    with pytest.raises(InterruptedError):
        main([str(photos), "--out", str(out), "--offline"])
    finished = {row["file"] for row in csv.DictReader(out.open())}
    assert len(finished) == 2  # two photos written when the run died
    with out.open("a") as f:
        f.write(f"{photos / '2_astronaut.jpg'},1,161.2")  # as if killed while writing the third one's rows
    killer.spare()
    main([str(photos), "--out", str(out), "--offline"])
    # Judged again: the photo cut off, and the two readable photos after it; the first two are not.
    assert killer.calls == 3
    assert out.read_text() == straight.read_text()


def test_a_csv_written_with_other_models_or_settings_is_not_continued(tmp_path):
    import json

    from demo.faces import MIN_SCORE

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASTRONAUT, photos / "astronaut.jpg")
    out = tmp_path / "results.csv"
    main([str(photos), "--out", str(out), "--offline", "--models", "a"])
    record = json.loads((tmp_path / "results.csv.settings.json").read_text())
    assert list(record["models"]) == ["a"] and len(record["models"]["a"]) == 16 and record["min_score"] == MIN_SCORE
    written = out.read_text()

    # Another model set, another threshold: refused with what differs and what to do; the CSV is untouched.
    with pytest.raises(SystemExit, match=r"other models than this run's.*Give another --out, or delete"):
        main([str(photos), "--out", str(out), "--offline", "--models", "a,b"])
    with pytest.raises(SystemExit, match="other min score"):
        main([str(photos), "--out", str(out), "--offline", "--models", "a", "--min-score", "0.97"])
    assert out.read_text() == written
    # Other weights under the same name (a new version pinned) are other models too.
    from demo.checkpoint import load_model
    from demo.predict import OtherRunError, check_same_run, run_settings
    from demo.predictor import Predictor
    from demo.sources import LOCAL_DIRS

    b_named_a = Predictor({"a": load_model(LOCAL_DIRS["b"])})
    with pytest.raises(OtherRunError, match="other models"):
        check_same_run(out, run_settings(b_named_a, 1, None))
    # The same command continues (nothing left to do: the rows stay as they were).
    main([str(photos), "--out", str(out), "--offline", "--models", "a"])
    assert out.read_text() == written


def test_shards_merge_into_the_same_csv_as_one_process(tmp_path, monkeypatch, capsys):
    photos = _photos(tmp_path)
    whole = tmp_path / "whole.csv"
    main([str(photos), "--out", str(whole), "--offline", "--workers", "0"])
    parts = [tmp_path / "part0.csv", tmp_path / "part1.csv"]
    main([str(photos), "--out", str(parts[0]), "--offline", "--shard", "0/2"])
    monkeypatch.setenv("RANK", "1")  # as torchrun sets it for the second process
    monkeypatch.setenv("WORLD_SIZE", "2")
    main([str(photos), "--out", str(parts[1]), "--offline"])
    files = [{row["file"] for row in csv.DictReader(p.open())} for p in parts]
    assert files[0] and files[1] and not files[0] & files[1]  # disjoint shares
    merged = tmp_path / "merged.csv"
    main([str(photos), "--out", str(merged), "--merge", *map(str, parts)])
    assert merged.read_text() == whole.read_text()
    with pytest.raises(SystemExit, match="finish every shard"):
        main([str(photos), "--out", str(tmp_path / "x.csv"), "--merge", str(parts[0])])
    # Parts judged with other settings are not joined.
    record = tmp_path / "part1.csv.settings.json"
    record.write_text(record.read_text().replace('"every": 1', '"every": 2'))
    with pytest.raises(SystemExit, match="other models or settings"):
        main([str(photos), "--out", str(tmp_path / "y.csv"), "--merge", *map(str, parts)])


def test_extract_split_copies_the_photos_of_one_split_as_they_are(tiny_pack, utk_folder, ff_folder, tmp_path):
    import csv
    import tarfile

    from tools.extract_split import extract

    # UTKFace as its archive holds it (UTKFace/NAME), FairFace as a folder.
    archive = tmp_path / "UTKFace.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(utk_folder, arcname="UTKFace")
    written = extract([archive, ff_folder], tiny_pack / "splits.csv", "test", tmp_path / "test_photos")
    with (tiny_pack / "splits.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert sum(written.values()) == len(rows) > 0
    for r in rows:
        copy = ("UTKFace/" if r["dataset"] == "utkface" else "") + r["file"]
        source = utk_folder if r["dataset"] == "utkface" else ff_folder
        assert (tmp_path / "test_photos" / copy).read_bytes() == (source / r["file"]).read_bytes()


def test_ctrl_c_says_in_one_line_how_to_continue_and_the_same_command_continues(tmp_path):
    """A real process, interrupted by a real SIGINT (Ctrl-C) once it has written some photos' rows."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    PHOTOS = 200  # noqa: N806
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(PHOTOS):  # enough that the run is never over before the signal comes
        shutil.copy(ASTRONAUT, photos / f"{i:03d}.jpg")
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "demo.predict", str(photos), "--out", str(out), "--offline", "--workers", "0"]
    root = Path(__file__).resolve().parents[1]
    # SIGINT restored in the child: a test run started in the background (`pytest &`) ignores it, and so would a
    # child that inherits that, which is not what a user at a terminal gets.
    process = subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "run the same command again to continue" in stderr
    written = {row["file"] for row in csv.DictReader(out.open())}
    assert 0 < len(written) < PHOTOS
    subprocess.run(command, cwd=root, check=True, capture_output=True, timeout=600)
    assert len({row["file"] for row in csv.DictReader(out.open())}) == PHOTOS


def test_ctrl_c_while_the_models_load_is_one_line(tmp_path, monkeypatch, capsys):
    import demo.sources

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.sources, "load_models", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main([str(ASTRONAUT), "--out", str(tmp_path / "out.csv"), "--offline"])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip() == "Stopped while loading the models; nothing was written."
    assert not (tmp_path / "out.csv").exists()
