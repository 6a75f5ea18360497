"""Mixup of a training batch (--mixup), with partners of similar age (--mixup-years, C-Mixup).

Each face of a batch is blended with a partner from the same batch, x = lam * x + (1 - lam) * partner,
one lam ~ Beta(alpha, alpha) a batch, and the loss is lam times the loss on the face's own labels plus
(1 - lam) times the loss on its partner's (Zhang et al., "mixup", 2018): the network is asked for
answers between the two, so it cannot be sure of faces it has never seen, and the loss is the same
code as without mixup. A small alpha (0.2) keeps most blends close to one face.

A blend of a baby and an old man is no face at all. With --mixup-years the partner is drawn with
probability exp(-d^2 / 2 sigma^2), d the years between the two faces' labelled ages (a group's mean
year), so faces are blended with faces of about their age (Yao et al., "C-Mixup: Improving
Generalization in Regression", 2022).

An epoch's running training MAE and accuracy (history.csv) are then those of the blended faces
against their own labels; validation sees unblended faces, as always.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from demo.heads import AGE_MAX
from training.data.ages import labelled_age


@dataclass(frozen=True)
class Mix:
    """One batch's blend: each face's share `lam` (one for the batch) and its partner's position."""

    lam: float
    partner: torch.Tensor  # long, faces


def draw_mix(alpha: float, years: float, age_low: torch.Tensor, age_high: torch.Tensor, age_min: int) -> Mix:
    """A blend for one batch (torch's global random state): lam ~ Beta(alpha, alpha); partners any other face of the
    batch (years 0) or, with `years` > 0, drawn by the Gaussian kernel of that width on the labelled ages (C-Mixup)."""
    n = len(age_low)
    if n < 2:
        return Mix(1.0, torch.zeros(n, dtype=torch.long))
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if years > 0:
        age = labelled_age(age_low.cpu(), age_high.cpu(), age_min, AGE_MAX - age_min + 1)
        weights = torch.exp(-0.5 * ((age[:, None] - age[None, :]) / years) ** 2)
    else:
        weights = torch.ones(n, n)
    weights.fill_diagonal_(0)  # blending a face with itself is no blend
    alone = weights.sum(dim=1) < 1e-12  # no other face near its age (e.g. the batch's only 90-year-old): anyone
    weights[alone] = 1.0
    weights.fill_diagonal_(0)
    return Mix(lam, torch.multinomial(weights, 1).squeeze(1))
