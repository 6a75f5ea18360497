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
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"
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


@pytest.fixture(scope="session")
def tiny_pack(utk_folder, tmp_path_factory) -> Path:
    from training.prepare import prepare
    from training.utkface import SPLITS, assign_split, scan

    # With 16 images a split can come out empty; take the first seed that fills all three.
    records = scan(utk_folder)[0]
    seed = next(s for s in range(100) if {assign_split(r.sha256, s) for r in records} == set(SPLITS))
    out = tmp_path_factory.mktemp("pack")
    prepare(utk_folder, out, seed=seed)
    return out


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
    from demo.ui import build_demo

    demo = build_demo(predictor, sources=shipped_models[1], stream_every=0.3)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url, demo
    demo.close()
