"""FairFace: reading its labels, packing it beside UTKFace, learning from age groups, mixing the sets."""

import math
import tarfile

import numpy as np
import pytest
import torch

from tests.conftest import FAIRFACE_ROWS, ROOT
from training.data import fairface, spec
from training.data.dataset import mixed_order
from training.data.fairface import FAIRFACE
from training.data.pack import FacePack
from training.fit.losses import age_losses

SHARED_FAIRFACE = ROOT.parent / "shared" / "data" / "FairFace-train-15k.tar"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"age": "30-39", "gender": "Female", "race": "East Asian"}, (30, 39, 1, 3)),
        ({"age": "0-2", "gender": "Male", "race": "White"}, (1, 2, 0, 0)),  # the age bins start at 1
        ({"age": "more than 70", "gender": "Male", "race": "Middle Eastern"}, (70, 116, 0, 6)),
    ],
)
def test_parse_good_rows(row, expected):
    assert fairface.parse_row(row) == expected


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"age": "03-Sep", "gender": "Male", "race": "White"}, "spreadsheet"),  # Excel's 3-9
        ({"age": "Oct-19", "gender": "Male", "race": "White"}, "age group"),  # Excel's 10-19
        ({"age": "70+", "gender": "Male", "race": "White"}, "age group"),
        ({"age": "20-29", "gender": "male ", "race": "White"}, "gender"),  # case matters: never guessed
        ({"age": "20-29", "gender": "Female", "race": "Asian"}, "race"),
        ({"gender": "Female", "race": "White"}, "age group"),
    ],
)
def test_unreadable_rows_give_a_reason(row, reason):
    result = fairface.parse_row(row)
    assert isinstance(result, str) and reason in result


def test_age_group_of_an_estimate():
    assert [FAIRFACE.group_of(a) for a in (0.4, 2.9, 3.0, 9.99, 10, 69.5, 70, 101)] == [0, 0, 1, 1, 2, 7, 8, 8]


def test_scan_skips_what_it_cannot_read_with_counts(ff_folder, caplog):
    records, data, stats = FAIRFACE.scan(ff_folder)
    assert len(records) == FAIRFACE_ROWS and stats.files == FAIRFACE_ROWS + 3
    assert sum(stats.skipped.values()) == 3 and len(stats.skipped) == 3
    assert "photo missing" in caplog.text and "03-Sep" in caplog.text
    first = records[0]
    labels = (first.file, first.age_low, first.age_high, first.gender, first.race)
    assert labels == ("fairface/train/1.jpg", 20, 29, 0, 0)
    assert spec.get(first.dataset).age_kind == "group" and data[first.key][:2] == b"\xff\xd8"


def test_archive_and_folder_read_alike_and_are_recognised(ff_folder, utk_folder, tmp_path):
    archive = tmp_path / "FairFace.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(ff_folder / "fairface", arcname="fairface")
    assert FAIRFACE.scan(archive)[0] == FAIRFACE.scan(ff_folder)[0]
    assert spec.recognise(archive) is spec.recognise(ff_folder) is FAIRFACE
    assert spec.recognise(utk_folder) is spec.get("utkface")


def test_a_folder_without_labels_is_refused(tmp_path):
    (tmp_path / "notes.csv").write_text("name,value\n")
    with pytest.raises(ValueError, match="no FairFace labels file"):
        FAIRFACE.scan(tmp_path)
    with pytest.raises(ValueError, match="not recognised as any known data set"):
        spec.recognise(tmp_path)


def test_pack_holds_both_sets_with_their_kind_of_age(tiny_pack):
    import json

    pack = FacePack(tiny_pack)
    ff = pack.dataset == 1
    assert ff.sum() >= FAIRFACE_ROWS - 1 and (pack.dataset == 0).sum() == 16
    assert (pack.age_high[ff] > pack.age_low[ff]).all()
    with np.load(tiny_pack / "faces.npz") as z:
        assert set(z["age_kind"][ff].tolist()) == {1} and set(z["age_kind"][~ff].tolist()) == {0}
    summary = json.loads((tiny_pack / "prepare.json").read_text())["datasets"]["fairface"]
    assert summary["images"] + summary["no_face_left_out"] == FAIRFACE_ROWS
    assert sorted(set(pack.split[ff].tolist())) == [0, 1, 2]


def test_group_loss_by_hand():
    # Bins 1..4 with probabilities .1 .2 .3 .4; group 2-3 holds .5: loss -ln .5; expected age 3.0 is inside.
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    loss = age_losses(logits, torch.tensor([2]), torch.tensor([3]), age_min=1, l1_weight=0.5)
    assert loss.item() == pytest.approx(math.log(2))
    # Group 1-2 holds .3; expected age 3.0 lies 1 year above it: -ln .3 + 0.5 * 1.
    loss = age_losses(logits, torch.tensor([1]), torch.tensor([2]), age_min=1, l1_weight=0.5)
    assert loss.item() == pytest.approx(-math.log(0.3) + 0.5)


def test_years_and_groups_share_a_batch():
    logits = torch.randn(2, 116)
    both = age_losses(logits, torch.tensor([34, 30]), torch.tensor([34, 39]), age_min=1)
    year = age_losses(logits[:1], torch.tensor([34]), torch.tensor([34]), age_min=1)
    group = age_losses(logits[1:], torch.tensor([30]), torch.tensor([39]), age_min=1)
    assert torch.allclose(both, torch.cat([year, group]))


def test_mixed_order_gives_each_set_its_share():
    datasets = np.array([0] * 900 + [1] * 100)
    order = mixed_order(datasets, {"utkface": 0.5, "fairface": 0.5}, 1000, torch.Generator().manual_seed(0))
    assert len(order) == 1000 and (datasets[order] == 1).sum() == 500
    small = order[datasets[order] == 1]
    assert np.bincount(small, minlength=1000)[900:].tolist() == [5] * 100  # repeats evenly
    natural = mixed_order(datasets, {}, 1000, torch.Generator().manual_seed(0))
    assert sorted(natural.tolist()) == list(range(1000))
    again = mixed_order(datasets, {"utkface": 0.5, "fairface": 0.5}, 1000, torch.Generator().manual_seed(0))
    assert np.array_equal(order, again)  # a resumed epoch draws the same faces
    only_utk = mixed_order(datasets, {"utkface": 1.0}, 100, torch.Generator().manual_seed(0))
    assert (datasets[only_utk] == 0).all() and len(only_utk) == 100
    with pytest.raises(ValueError, match="unknown data set"):
        mixed_order(datasets, {"imdb": 1.0}, 10, torch.Generator())


@pytest.mark.skipif(not SHARED_FAIRFACE.is_file(), reason="needs ../shared/data/FairFace-train-15k.tar")
def test_the_shared_archive_reads_whole():
    records, _, stats = FAIRFACE.scan(SHARED_FAIRFACE)
    assert stats.files == 15000 and not stats.skipped
    assert len(records) + stats.duplicates == 15000


SHARED_FAIRFACE_MORE = SHARED_FAIRFACE.parent / "FairFace-train-15001-36000.tar.gz"


@pytest.mark.skipif(not SHARED_FAIRFACE_MORE.is_file(), reason="needs ../shared/data/FairFace-train-15001-36000.tar.gz")
def test_the_second_shared_archive_reads_whole():
    # WebP photos and a labels file of their own name (labels-15001-36000.csv).
    records, data, stats = FAIRFACE.scan(SHARED_FAIRFACE_MORE)
    assert stats.files == 21000 and not stats.skipped
    assert len(records) + stats.duplicates == 21000
    assert records[0].file == "fairface/train/15001.webp" and data[records[0].key][8:12] == b"WEBP"
