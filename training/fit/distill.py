"""Learning from a trained model's answers as well as from the labels (knowledge distillation, --distill-from).

A teacher (Model B, say) gives every training face a whole age distribution and a P(female), where
a label gives one year, or a decade, and a hard 0 or 1: which neighbouring ages are nearly as
likely, and which faces are hard to call. The student learns

    (1 - w) * the loss on the labels + w * (KL(teacher's age distribution || its own) + BCE(its gender, teacher's P))

with w = --distill-weight (Hinton, Vinyals and Dean, 2015, at temperature 1). The teacher's answers
are computed once, on the training faces as they are stored (no augmentation: a flip or a small turn
leaves age and gender as they were), at the teacher's own input size and with its own test-time
flip, and kept in the run folder (teacher.pt), so a resumed run does not compute them again. They
are its raw answers, before its calibration: the student is calibrated on its own afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from demo.checkpoint import load_model
from training.data.dataset import FaceDataset
from training.data.pack import FacePack
from training.evaluation.metrics import collect_outputs
from training.fit import distributed

log = logging.getLogger(__name__)

TEACHER_NAME = "teacher.pt"


@dataclass(frozen=True)
class Teacher:
    """A teacher's answers for each of a run's training faces, in the order of its FaceDataset."""

    age_probs: torch.Tensor  # faces x age bins
    p_female: torch.Tensor  # faces

    def loss(self, positions: torch.Tensor, age_logits: torch.Tensor, gender_logit: torch.Tensor) -> torch.Tensor:
        """The mean distillation loss of a batch of the faces at `positions`."""
        target = self.age_probs[positions].to(age_logits.device)
        age = F.kl_div(F.log_softmax(age_logits.float(), dim=-1), target, reduction="batchmean")
        p_female = self.p_female[positions].to(gender_logit.device)
        gender = F.binary_cross_entropy_with_logits(gender_logit.float(), p_female)
        return age + gender


def teacher_for(folder: str, pack: FacePack, indices: np.ndarray, num_age_bins: int, run_dir: Path, device: str,
                ranks: distributed.Ranks, batch_size: int = 128) -> Teacher:
    """The answers of the model in `folder` for the faces `indices` of `pack`: read from run_dir/teacher.pt when a
    run (resumed) has them, else computed (each process its share) and saved there."""
    cached = run_dir / TEACHER_NAME
    if cached.is_file():
        saved = torch.load(cached, weights_only=True)
        if saved["teacher"] == str(folder) and torch.equal(saved["indices"], torch.from_numpy(indices)):
            return Teacher(saved["age_probs"], saved["p_female"])
    loaded = load_model(folder, device=device, engine="torch")
    config = loaded.config
    if config.num_age_bins != num_age_bins:
        raise ValueError(f"--distill-from {folder} answers {config.num_age_bins} ages and this model "
                         f"{num_age_bins}: the teacher's age distribution must cover the same years")
    mine = indices[ranks.rank :: ranks.world]
    log.info("the teacher %s answers %d training faces (%s)", folder, len(mine),
             f"{ranks.world} processes" if ranks.active else "one process")
    faces = FaceDataset(pack, mine, config.input_size, config.mean, config.std, in_memory=False)
    out = collect_outputs(loaded.model, DataLoader(faces, batch_size=batch_size), device, channels_last=True,
                          flip=config.flip)
    parts = distributed.gathered({"age_probs": out.age_logits.softmax(-1),
                                  "p_female": torch.sigmoid(out.gender_logit.float()),
                                  "at": torch.arange(ranks.rank, len(indices), ranks.world)}, ranks)
    order = torch.argsort(parts["at"])  # back to the faces' own order, from each process's share
    teacher = Teacher(parts["age_probs"][order], parts["p_female"][order])
    if ranks.main:
        torch.save({"teacher": str(folder), "indices": torch.from_numpy(indices), "age_probs": teacher.age_probs,
                    "p_female": teacher.p_female}, cached)
    return teacher


class Positioned(Dataset):
    """A dataset's items with each one's position appended (where its teacher's answers are)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, k: int) -> tuple:
        return (*self.dataset[k], k)
