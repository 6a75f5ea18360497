"""The two task heads shared by both models, and how their outputs become years and probabilities.

The age head predicts a distribution over whole years (one logit per year, AGE_MIN..AGE_MAX).
Its mean is the point estimate. The range is read from the same distribution made flatter or
sharper by a temperature, between the percentiles that leave out (1 - level) / 2 on each side;
temperature and level are fitted together on the validation faces after training, so that the
range holds 80 % of true ages on each data set (training.evaluation.metrics.fit_age_range). The
estimate itself is the trained distribution's mean, which the temperature does not move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# The years the age head has a bin for: UTKFace's range, which every other data set's ages fall in.
AGE_MIN, AGE_MAX = 1, 116


class AgeGenderHeads(nn.Module):
    """Age distribution head and gender logit head on one shared feature vector."""

    def __init__(self, in_features: int, num_age_bins: int, hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.age = _mlp(in_features, hidden, num_age_bins, dropout)
        self.gender = _mlp(in_features, hidden, 1, dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.age(features), self.gender(features).squeeze(-1)


def _mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_features),
    )


@dataclass(frozen=True)
class AgeEstimate:
    mean: torch.Tensor  # years, float
    low: torch.Tensor  # years, integer-valued
    high: torch.Tensor
    probs: torch.Tensor | None = None  # the distribution over the years the range is read from (tempered)


def age_bins(age_min: int, age_max: int) -> torch.Tensor:
    return torch.arange(age_min, age_max + 1, dtype=torch.float32)


def decode_age(
    logits: torch.Tensor, age_min: int, temperature: float = 1.0, level: float = 0.8
) -> AgeEstimate:
    """Mean age of the predicted distribution, and the central `level` range of it at `temperature`.

    low is the first year whose cumulative probability reaches (1 - level) / 2, high the first
    whose cumulative probability reaches (1 + level) / 2. The mean is the untempered one: the
    estimate training made (its L1 term is on this mean), whatever shape the range is given.
    """
    bins = age_bins(age_min, age_min + logits.shape[-1] - 1).to(logits.device)
    mean = torch.softmax(logits.float(), dim=-1) @ bins
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    low, high = range_of(probs, level)
    return AgeEstimate(mean=mean, low=(low + age_min).float(), high=(high + age_min).float(), probs=probs)


def range_of(probs: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin indices of the central `level` range of distributions over the bins (last dimension)."""
    cdf = probs.cumsum(dim=-1)
    tail = (1.0 - level) / 2
    return _first_reaching(cdf, tail), _first_reaching(cdf, 1.0 - tail)


def _first_reaching(cdf: torch.Tensor, level: float) -> torch.Tensor:
    # A small tolerance so a cdf that reaches the level only up to rounding still counts.
    reached = cdf >= level - 1e-6
    return reached.float().argmax(dim=-1)


def gender_probability(logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P(female) from the gender logit."""
    return torch.sigmoid(logit.float() / temperature)
