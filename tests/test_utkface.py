import hashlib
import tarfile

import numpy as np
import pytest

from training.data.pack import FacePack
from training.data.records import assign_split
from training.data.utkface import UTKFACE, Labels, iter_images, parse_labels

scan = UTKFACE.scan


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("34_1_2_20170116174525125.jpg.chip.jpg", Labels(34, 1, 2)),
        ("UTKFace/1_0_0_20161219140623097.jpg.chip.jpg", Labels(1, 0, 0)),
        ("116_0_4_20170120134921760.jpg.chip.jpg", Labels(116, 0, 4)),
        ("25_1_20170116.jpg.chip.jpg", None),  # race field missing, as in three official files
        ("39_1_20170116174525125.jpg.chip.jpg", None),
        ("0_0_0_20170116174525125.jpg.chip.jpg", None),  # age out of range
        ("117_0_0_2017.jpg.chip.jpg", None),
        ("30_2_0_2017.jpg.chip.jpg", None),  # gender must be 0 or 1
        ("30_0_5_2017.jpg.chip.jpg", None),  # race must be 0..4
        ("thirty_0_0_2017.jpg", None),
        ("", None),
    ],
)
def test_parse_labels(name, expected):
    assert parse_labels(name) == expected


def test_split_is_deterministic_and_roughly_80_10_10():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    first = [assign_split(h) for h in hashes]
    assert first == [assign_split(h) for h in hashes]
    shares = {s: first.count(s) / len(first) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.8) < 0.02 and abs(shares["val"] - 0.1) < 0.015
    assert [assign_split(h, seed=1) for h in hashes] != first  # the seed matters


def test_scan_drops_duplicates_and_malformed(utk_folder, caplog):
    records, data, stats = scan(utk_folder)
    assert stats.files == 19
    assert stats.malformed == 1 and stats.duplicates == 1
    assert len(records) == 17  # 16 chips + the corrupt file, which only fails at decoding
    assert "skipped 1 row(s) or file(s): name is not AGE_GENDER_RACE_DATETIME" in caplog.text
    shas = [r.sha256 for r in records]
    assert len(set(shas)) == len(shas)
    assert "utkface:99_0_0_20170101000000000.jpg.chip.jpg" not in data  # the later name of the pair goes


def test_duplicates_never_straddle_splits(utk_folder):
    """Identical bytes get the identical split, whatever their names."""
    blob = next(utk_folder.glob("20_*")).read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    records = scan(utk_folder)[0]
    by_sha = {r.sha256: r.split for r in records}
    assert by_sha[sha] == assign_split(sha)


def test_archive_and_folder_give_the_same_images(utk_folder, tmp_path):
    archive = tmp_path / "UTKFace.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(utk_folder, arcname="UTKFace")
    assert list(iter_images(archive)) == list(iter_images(utk_folder))
    with pytest.raises(ValueError, match="neither a folder nor a tar"):
        list(iter_images(next(utk_folder.glob("20_*"))))


def test_prepare_packs_every_readable_face(tiny_pack, utk_folder):
    import json

    summary = json.loads((tiny_pack / "prepare.json").read_text())
    utk = summary["datasets"]["utkface"]
    assert utk["images"] == 16 and utk["unreadable"] == 1
    source = summary["sources"][str(utk_folder)]
    assert source["kind"] == "utkface" and sum(source["skipped"].values()) == 1 and source["duplicates_dropped"] == 1
    pack = FacePack(tiny_pack)
    utk_rows = pack.dataset == 0
    assert utk_rows.sum() == 16 and pack.image(0).size == (128, 128)
    assert (pack.age_low[utk_rows] == pack.age_high[utk_rows]).all()  # ages in years
    assert sorted(set(pack.split[utk_rows].tolist())) == [0, 1, 2]
    assert pack.detected[utk_rows].sum() >= 14  # real MTCNN on real faces
    assert (pack.det_score[pack.detected] > 0.9).all()
    splits = (tiny_pack / "splits.csv").read_text().splitlines()
    assert sum(line.startswith("utkface,") for line in splits) == 17  # the corrupt file is listed, not packed


def test_prepare_resumes_without_redoing_parts(tiny_pack, utk_folder, ff_folder):
    from training.data.prepare import prepare

    part = tiny_pack / "parts" / "part_00000.npz"
    before = part.stat().st_mtime_ns
    pack_before = np.load(tiny_pack / "faces.npz")["blob"].copy()
    seed = json_seed(tiny_pack)
    prepare([utk_folder, ff_folder], tiny_pack, seed=seed, grouping=None)
    assert part.stat().st_mtime_ns == before
    assert np.array_equal(np.load(tiny_pack / "faces.npz")["blob"], pack_before)


def json_seed(pack_dir) -> int:
    import json

    return json.loads((pack_dir / "prepare.json").read_text())["seed"]


def test_a_source_added_later_costs_only_its_own_images(utk_folder, ff_folder, tmp_path, monkeypatch):
    import training.data.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "PART_SIZE", 4)  # 17 UTKFace records: parts 0-3 whole, part 4 straddles
    out = tmp_path / "grown"
    prepare_module.prepare([utk_folder], out)
    parts = sorted((out / "parts").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    prepare_module.prepare([utk_folder, ff_folder], out)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert all(after[f"part_{i:05d}.npz"] == before[f"part_{i:05d}.npz"] for i in range(4))  # not redone
    assert after["part_00004.npz"] != before["part_00004.npz"]
    fresh = tmp_path / "fresh"
    prepare_module.prepare([utk_folder, ff_folder], fresh)
    grown, made = np.load(out / "faces.npz"), np.load(fresh / "faces.npz")
    assert all(np.array_equal(grown[k], made[k]) for k in made.files)
    assert (out / "splits.csv").read_text() == (fresh / "splits.csv").read_text()
    with pytest.raises(ValueError, match="describes other data"):  # a source put first would mix parts
        prepare_module.prepare([ff_folder, utk_folder], out)
    # Another seed only splits again: parts hold crops, not splits.
    prepare_module.prepare([utk_folder, ff_folder], out, seed=7)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("part_*")} == {
        k: v for k, v in after.items() if k.startswith("part_")}
    assert (out / "splits.csv").read_text() != (fresh / "splits.csv").read_text()
