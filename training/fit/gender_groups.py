"""Worst-group reweighting of the gender loss over each data set's race groups (--gender-groups).

A model's gender answers are less often right for some groups than for others (Black faces, in
both data sets), and the average loss hardly notices a group that is a seventh of the faces. Every
epoch the trainer records each (data set, race group)'s mean gender loss on its training faces
(history.csv: `train_gender_loss_<set>_<race>`); with `--gender-groups P` above 0 the next epoch
weighs each face's gender loss by its group's (mean loss / the mean over all faces) ** P, the
weights scaled so that the training faces weigh 1 on average: the groups the model gets wrong more
count more. It is the epoch-wise, deterministic cousin of group DRO (Sagawa et al., 2020), which
reweights after every batch: the weights come from a whole epoch of faces, are the same in every
process, and need no state beyond the history a resumed run already has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.data import spec
from training.data.pack import FacePack

COLUMN = "train_gender_loss_"


@dataclass(frozen=True)
class GenderGroups:
    """The (data set, race group) pairs of a run's training faces, and how many faces each has."""

    keys: tuple[tuple[int, int], ...]  # (data set's registry index, race index), sorted
    names: tuple[str, ...]  # e.g. "fairface_Black", as in history.csv's columns
    counts: tuple[int, ...]

    @classmethod
    def of(cls, pack: FacePack, indices: np.ndarray) -> GenderGroups:
        pairs, counts = np.unique(np.stack([pack.dataset[indices], pack.race[indices]], axis=1), axis=0,
                                  return_counts=True)
        keys = tuple((int(d), int(r)) for d, r in pairs)
        names = tuple(f"{spec.at(d).name}_{spec.at(d).races[r].replace(' ', '_')}" for d, r in keys)
        return cls(keys, names, tuple(int(n) for n in counts))

    def index(self, dataset: torch.Tensor, race: torch.Tensor) -> torch.Tensor:
        """Each face's position in `keys` (every face of the training set has one)."""
        code = {d * 256 + r: k for k, (d, r) in enumerate(self.keys)}
        return torch.tensor([code[int(d) * 256 + int(r)] for d, r in zip(dataset, race)], dtype=torch.long)

    def totals(self, gender_logit: torch.Tensor, gender: torch.Tensor, dataset: torch.Tensor,
               race: torch.Tensor) -> dict[str, float]:
        """A batch's summed gender loss and face count per group, as running totals to add up (and sum over ranks)."""
        losses = F.binary_cross_entropy_with_logits(gender_logit.float().cpu(), gender.float(), reduction="none")
        at = self.index(dataset, race)
        sums = torch.zeros(len(self.keys), dtype=torch.float64).index_add_(0, at, losses.double())
        counts = torch.bincount(at, minlength=len(self.keys))
        return {f"loss {name}": float(s) for name, s in zip(self.names, sums)} | {
            f"faces {name}": float(n) for name, n in zip(self.names, counts)}

    def columns(self, totals: dict[str, float]) -> dict[str, float]:
        """History columns: each group's mean training gender loss over the epoch (nan where it drew no face)."""
        return {COLUMN + name: totals[f"loss {name}"] / totals[f"faces {name}"] if totals[f"faces {name}"] else
                float("nan") for name in self.names}

    def weight_table(self, last_row: dict | None, power: float) -> torch.Tensor | None:
        """Data sets x races: each group's gender-loss weight for the next epoch, from the last epoch's row;
        None (every face alike) with `power` 0 or before the first epoch has a row."""
        if not power or last_row is None:
            return None
        losses = torch.tensor([float(last_row.get(COLUMN + name, float("nan"))) for name in self.names])
        counts = torch.tensor(self.counts, dtype=torch.float64)
        seen = torch.isfinite(losses)
        if not seen.any():
            return None
        mean = (losses[seen].double() * counts[seen]).sum() / counts[seen].sum()
        weights = torch.where(seen, (losses.double() / mean) ** power, torch.ones_like(mean))
        weights = weights / ((weights * counts).sum() / counts.sum())  # the training faces weigh 1 on average
        table = torch.ones(len(spec.names()), 256, dtype=torch.float32)
        for (d, r), w in zip(self.keys, weights):
            table[d, r] = float(w)
        return table

    def describe(self, table: torch.Tensor) -> str:
        return ", ".join(f"{name} {float(table[d, r]):.2f}" for name, (d, r) in zip(self.names, self.keys))
