"""The two task heads shared by both models, and how their outputs become years and probabilities.

The age head predicts a distribution over whole years (one logit per year, AGE_MIN..AGE_MAX).
Its mean is the point estimate. The range runs between two percentiles of the same distribution
(a `RangeRule`), chosen by where the estimate lies: a baby's range cannot reach below age 1 and an
old face's estimate is pulled towards the middle, so one central percentile range misses both.
The percentiles of each region of the estimate are fitted on the validation faces after training
so that the range holds 70-90 % of true ages in every age band and group, and about 80 % overall
(training.evaluation.metrics.fit_age_range).
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
class RangeRule:
    """Where the range lies in an age distribution, by region of the estimate.

    A face whose estimate (the mean age) is at least starts[k] and below starts[k + 1] gets the
    range from the first year whose cumulative probability reaches lower[k] to the first reaching
    upper[k], of its distribution sharpened or flattened by `temperature`. The default is the
    central 80 % everywhere.
    """

    starts: tuple[float, ...] = (float(AGE_MIN),)
    lower: tuple[float, ...] = (0.1,)
    upper: tuple[float, ...] = (0.9,)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not len(self.starts) == len(self.lower) == len(self.upper) >= 1:
            raise ValueError("a range rule needs one start, lower and upper level per region")
        if any(not 0.0 <= lo <= hi <= 1.0 for lo, hi in zip(self.lower, self.upper)):
            raise ValueError(f"range levels must satisfy 0 <= lower <= upper <= 1: {self.lower}, {self.upper}")

    @classmethod
    def central(cls, level: float, temperature: float = 1.0) -> RangeRule:
        """The central `level` of the distribution at `temperature`, for every estimate."""
        return cls(lower=((1 - level) / 2,), upper=((1 + level) / 2,), temperature=temperature)

    def region(self, mean: torch.Tensor) -> torch.Tensor:
        """Index of the region each estimate falls in."""
        return torch.bucketize(mean.float(), torch.tensor(self.starts[1:], device=mean.device), right=True)

    def read(self, probs: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin indices [low, high] of the range of (already tempered) distributions `probs` with estimates `mean`."""
        region = self.region(mean)
        lower = torch.tensor(self.lower, device=probs.device)[region]
        upper = torch.tensor(self.upper, device=probs.device)[region]
        cdf = probs.cumsum(dim=-1)
        return _first_reaching(cdf, lower.unsqueeze(-1)), _first_reaching(cdf, upper.unsqueeze(-1))


@dataclass(frozen=True)
class AgeEstimate:
    mean: torch.Tensor  # years, float
    low: torch.Tensor  # years, integer-valued
    high: torch.Tensor
    probs: torch.Tensor | None = None  # the distribution over the years the range is read from (tempered)


def age_bins(age_min: int, age_max: int) -> torch.Tensor:
    return torch.arange(age_min, age_max + 1, dtype=torch.float32)


DEFAULT_RANGE = RangeRule()


def decode_age(logits: torch.Tensor, age_min: int, rule: RangeRule = DEFAULT_RANGE) -> AgeEstimate:
    """Mean age of the predicted distribution, and its range as `rule` reads it.

    The mean is the untempered one: the estimate training made (its L1 term is on this mean),
    whatever shape the range is given.
    """
    bins = age_bins(age_min, age_min + logits.shape[-1] - 1).to(logits.device)
    mean = torch.softmax(logits.float(), dim=-1) @ bins
    probs = torch.softmax(logits.float() / rule.temperature, dim=-1)
    low, high = rule.read(probs, mean)
    return AgeEstimate(mean=mean, low=(low + age_min).float(), high=(high + age_min).float(), probs=probs)


def _first_reaching(cdf: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    # A small tolerance so a cdf that reaches the level only up to rounding still counts.
    reached = cdf >= level - 1e-6
    return reached.float().argmax(dim=-1)


def gender_probability(logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P(female) from the gender logit."""
    return torch.sigmoid(logit.float() / temperature)
