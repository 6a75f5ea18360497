"""The training-speed benchmark: its old-style dataset matches the real one, and it times real steps."""

import dataclasses
import math

import torch

from tools.speed import NOT_CONFIG, VARIANTS
from training.data.dataset import AugmentConfig, FaceDataset
from training.data.pack import FacePack
from training.fit.config import TrainConfig
from training.fit.trainer import images_per_second


def test_decoding_every_epoch_gives_the_crops_decoded_once(tiny_pack):
    pack = FacePack(tiny_pack)
    faces = pack.indices("train")
    args = (pack, faces, 48, (0.5,) * 3, (0.5,) * 3, AugmentConfig(enabled=False))
    once, every = FaceDataset(*args), FaceDataset(*args, in_memory=False)
    assert every.crops is None  # nothing decoded up front: memory stays the compressed pack's
    assert all(torch.equal(once[k][0], every[k][0]) for k in range(len(faces)))


def test_images_per_second_runs_the_trainer_steps(tiny_pack):
    pack = FacePack(tiny_pack)
    cfg = TrainConfig(model="a", data=str(tiny_pack), input_size=48, widths=(8, 16), batch_size=2, device="cpu")
    rate = images_per_second(dataclasses.replace(cfg, crops_in_memory=False), pack, steps=1, warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_every_variant_names_an_earlier_base():
    names = [name for name, _, _ in VARIANTS]
    assert all(base is None or names.index(base) < names.index(name) for name, base, _ in VARIANTS)
    assert all(set(changes) <= set(TrainConfig.__dataclass_fields__) | NOT_CONFIG
               for _, _, changes in VARIANTS)
