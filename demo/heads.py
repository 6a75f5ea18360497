"""The two task heads shared by both models, and how their outputs become years and probabilities.

The age head predicts a distribution over whole years (one logit per year, AGE_MIN..AGE_MAX).
Its mean is the point estimate; its 10th and 90th percentiles give the 80 % range. A temperature,
fitted on the validation split after training, makes that range honest.
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
    probs: torch.Tensor | None = None  # the distribution over the years, after the temperature


def age_bins(age_min: int, age_max: int) -> torch.Tensor:
    return torch.arange(age_min, age_max + 1, dtype=torch.float32)


def decode_age(
    logits: torch.Tensor, age_min: int, temperature: float = 1.0, coverage: float = 0.8
) -> AgeEstimate:
    """Mean age and the central `coverage` range of the predicted distribution.

    low is the first year whose cumulative probability reaches (1 - coverage) / 2, high the
    first whose cumulative probability reaches (1 + coverage) / 2.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    bins = age_bins(age_min, age_min + logits.shape[-1] - 1).to(probs.device)
    mean = probs @ bins
    cdf = probs.cumsum(dim=-1)
    tail = (1.0 - coverage) / 2
    low = _first_reaching(cdf, tail) + age_min
    high = _first_reaching(cdf, 1.0 - tail) + age_min
    return AgeEstimate(mean=mean, low=low.float(), high=high.float(), probs=probs)


def _first_reaching(cdf: torch.Tensor, level: float) -> torch.Tensor:
    # A small tolerance so a cdf that reaches the level only up to rounding still counts.
    reached = cdf >= level - 1e-6
    return reached.float().argmax(dim=-1)


def gender_probability(logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P(female) from the gender logit."""
    return torch.sigmoid(logit.float() / temperature)
