"""A third data set, added as a user would: one spec class, registered; nothing else changes.

The set is synthetic and tiny: portraits cut from the example photos, listed in `ages.tsv`
(file, age group, gender), with age groups of its own (not FairFace's). Prepare recognises it,
training draws from it, evaluation and the CLI scorer report it by its spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.conftest import ASTRONAUT, HOPPER
from training.data import spec
from training.data.records import SPLITS, Record, RecordSet, ScanStats, assign_split
from training.data.sources import Source
from training.data.spec import GROUP, DatasetSpec, by_label


class ThreeAges(DatasetSpec):
    """Photos listed in ages.tsv: file, child / adult / senior, F or M."""

    name = "three_ages"
    title = "ThreeAges"
    age_kind = GROUP
    races = ("unknown",)
    age_groups = {"child": (1, 12), "adult": (13, 59), "senior": (60, 116)}
    breakdowns = (by_label("by_race", "race", races),)
    about = "ThreeAges is a synthetic test set."

    def recognises(self, source: Path) -> bool:
        with Source(source) as src:
            return "ages.tsv" in src.names

    def scan(self, source: Path, seed: int = 0) -> tuple[list[Record], dict[str, bytes], ScanStats]:
        stats = ScanStats()
        found = RecordSet(stats, seed)
        with Source(source) as src:
            for line in src.read("ages.tsv").decode().splitlines():
                stats.files += 1
                file, group, gender = line.split("\t")
                found.add(self.name, file, src.read(file), *self.age_groups[group], int(gender == "F"), 0)
        return found.records, found.data, stats


def _photos(folder: Path, count: int = 12) -> Path:
    """Portraits with the face in the middle, like a data set's photos."""
    folder.mkdir()
    boxes = [(ASTRONAUT, (150, 24, 300, 211)), (HOPPER, (122, 57, 408, 403))]
    lines = []
    for i in range(count):
        path, (x1, y1, x2, y2) = boxes[i % 2]
        shift = (i // 2) * 4
        photo = Image.open(path).convert("RGB").crop((x1 - shift, y1, x2 - shift, y2)).resize((224, 224))
        (ImageOps.mirror(photo) if i % 3 else photo).save(folder / f"{i}.jpg", quality=90)
        lines.append(f"{i}.jpg\t{('child', 'adult', 'senior')[i % 3]}\t{'F' if i % 2 else 'M'}")
    (folder / "ages.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def three_ages(monkeypatch):
    """ThreeAges registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(spec, "_REGISTRY", dict(spec._REGISTRY))
    return spec.register(ThreeAges())


def test_a_registered_data_set_is_prepared_trained_on_and_evaluated(three_ages, utk_folder, tmp_path):
    from training import evaluate
    from training.data.pack import FacePack
    from training.data.prepare import prepare
    from training.fit.config import TrainConfig
    from training.fit.trainer import fit

    source = _photos(tmp_path / "three_ages")
    records = three_ages.scan(source)[0]
    seed = next(s for s in range(200) if {assign_split(r.sha256, s) for r in records} == set(SPLITS))
    out = tmp_path / "pack"
    # Recognised from its content, beside UTKFace; split by hash (its photos are copies of two, see tiny_pack).
    summary = prepare([utk_folder, source], out, seed=seed, grouping=None)
    assert summary["sources"][str(source)]["kind"] == "three_ages"
    assert summary["datasets"]["three_ages"]["images"] >= 10  # MTCNN finds the faces (else they are left out)
    pack = FacePack(out)
    mine = pack.dataset == spec.index("three_ages")
    assert (pack.age_high[mine] > pack.age_low[mine]).all()

    cfg = TrainConfig(model="a", data=str(out), out=str(tmp_path / "run"), input_size=48, widths=(8, 16), epochs=2,
                      batch_size=4, device="cpu", mix={"utkface": 0.5, "three_ages": 0.5})
    run = fit(cfg)
    history = (run / "history.csv").read_text().splitlines()
    assert "n_three_ages" in history[0] and len(history) == 3
    val = json.loads((run / "val_metrics.json").read_text())
    assert {"age_group_exact", "age_group_within_one"} <= set(val["three_ages"])

    report = tmp_path / "report"
    evaluate.main([str(run), "--data", str(out), "--split", "test", "--out", str(report)])
    metrics = json.loads((report / "metrics.json").read_text())[0]
    overall = metrics["three_ages"]["overall"]
    assert overall["n"] == int((mine & (pack.split == SPLITS.index("test"))).sum())
    assert set(metrics["three_ages"]["by_race"]) == {"unknown"}
    text = (report / "report.md").read_text()
    assert "## ThreeAges" in text and "ThreeAges age group exact" in text
    assert (report / "three_ages_age_groups.png").stat().st_size > 5000
