"""Multi-task loss: age from a year or from a group of years, gender as BCE.

An age in years (UTKFace) is learned as a smoothed distribution around it plus an L1 term on the
expected age. An age group (FairFace, e.g. 30-39) is learned from the probability the predicted
distribution puts inside the group's years, plus an L1 term on how far the expected age lies
outside the group. Both kinds can share a batch: a label is a range [low, high], a year when
low == high.

Ages are imbalanced (few faces are over 60), so a model pulls old faces towards the middle. With
`--age-reweight lds` each face's age loss is weighted by the inverse square root of how common
its age is among the training faces, the counts smoothed over neighbouring years first
(label-distribution smoothing, Yang et al., "Delving into Deep Imbalanced Regression", 2021).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from demo.heads import age_bins
from training.data.ages import year_weights


def soft_age_targets(ages: torch.Tensor, age_min: int, num_bins: int, sigma: float) -> torch.Tensor:
    """A Gaussian of width `sigma` years around each true age, normalised over the bins.

    Neighbouring years are nearly as right as the true one; one-hot targets would punish
    predicting 33 for a 34-year-old as much as predicting 80.
    """
    bins = age_bins(age_min, age_min + num_bins - 1).to(ages.device)
    weights = torch.exp(-0.5 * ((bins[None, :] - ages[:, None].float()) / sigma) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def label_years(bins: torch.Tensor, age_low: torch.Tensor, age_high: torch.Tensor) -> torch.Tensor:
    """Faces x bins: whether each year bin lies inside each face's label [age_low, age_high]."""
    return (bins[None, :] >= age_low[:, None]) & (bins[None, :] <= age_high[:, None])


def age_losses(logits: torch.Tensor, age_low: torch.Tensor, age_high: torch.Tensor, age_min: int,
               sigma: float = 2.0, l1_weight: float = 0.1) -> torch.Tensor:
    """Per-face age loss for labels [age_low, age_high] (years); see the module docstring."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    bins = age_bins(age_min, age_min + logits.shape[-1] - 1).to(logits.device)
    low, high = age_low.float(), age_high.float()
    year = age_low == age_high
    # Year labels: cross-entropy against the smoothed target.
    targets = soft_age_targets(age_low, age_min, logits.shape[-1], sigma)
    ce = -(targets * log_probs).sum(dim=-1)
    # Group labels: -log P(low <= age <= high).
    inside = label_years(bins, low, high)
    group_nll = -torch.logsumexp(log_probs.masked_fill(~inside, float("-inf")), dim=-1)
    expected = log_probs.exp() @ bins
    outside = F.relu(low - expected) + F.relu(expected - high)  # |expected - age| for a year label
    return torch.where(year, ce, group_nll) + l1_weight * outside


def age_density(age_low: torch.Tensor, age_high: torch.Tensor, age_min: int, num_bins: int,
                sigma: float) -> torch.Tensor:
    """The share of faces at each year (a group's face spread over its years as `year_weights` says),
    smoothed by a Gaussian of `sigma` years: LDS's effective label density.

    The kernel is a weighted average over the years that exist, so the first and last years are
    not diluted by years beyond the head's range (age 1, the commonest UTKFace age, stays the densest).
    """
    bins = age_bins(age_min, age_min + num_bins - 1)
    counts = year_weights(age_low, age_high, age_min, num_bins).sum(dim=0)
    kernel = torch.exp(-0.5 * ((bins[:, None] - bins[None, :]) / sigma) ** 2)
    smoothed = (kernel @ counts) / kernel.sum(dim=1)
    return smoothed / smoothed.sum()


def inverse_sqrt_weights(density: torch.Tensor, age_low: torch.Tensor, age_high: torch.Tensor, age_min: int,
                         max_ratio: float = 10.0) -> torch.Tensor:
    """Per year, the weight of a face of that age: 1 / sqrt(density), at most `max_ratio` times the
    weight of the commonest year (so a handful of centenarians cannot dominate a batch), scaled so
    that the faces given (the training faces) weigh 1 on average."""
    floor = density.max() / max_ratio**2
    table = density.clamp(min=floor) ** -0.5
    return table / face_weights(table, age_low, age_high, age_min).mean()


def face_weights(table: torch.Tensor, age_low: torch.Tensor, age_high: torch.Tensor, age_min: int) -> torch.Tensor:
    """Each face's weight from a per-year table: its year's, or the mean over its group's years (`year_weights`)."""
    return year_weights(age_low.to(table.device), age_high.to(table.device), age_min, len(table)) @ table


def age_loss(logits: torch.Tensor, ages: torch.Tensor, age_min: int, sigma: float = 2.0,
             l1_weight: float = 0.1) -> torch.Tensor:
    """Mean loss for ages in years: cross-entropy against soft targets + l1_weight * |expected - age|."""
    return age_losses(logits, ages, ages, age_min, sigma, l1_weight).mean()


def gender_loss(logit: torch.Tensor, gender: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy, each face's weighed by `weights` (mean 1 over the training faces) if given."""
    return F.binary_cross_entropy_with_logits(logit.float(), gender.float(), weight=weights)


@dataclass(frozen=True)
class LossWeights:
    """Task weights; a weight of 0 trains that head not at all (single-task runs)."""

    age: float = field(default=1.0, metadata={"help": "weight of the age loss; 0 trains gender alone",
                                              "flag": "--age-weight"})
    gender: float = field(default=1.0, metadata={"help": "weight of the gender loss; 0 trains age alone",
                                                 "flag": "--gender-weight"})
    age_sigma: float = field(default=2.0, metadata={"help": "width in years of the soft target around a true age",
                                                    "flag": "--age-sigma"})
    age_l1: float = field(default=0.1, metadata={"help": "weight of the L1 term on the expected age",
                                                 "flag": "--age-l1"})
    age_reweight: str = field(default="none", metadata={
        "help": "none, or lds: weight each face's age loss by 1/sqrt of its age's share of the training faces, "
                "smoothed over --age-sigma years (rare ages, such as 60+, count more)", "flag": "--age-reweight"})
    gender_groups: float = field(default=0.0, metadata={
        "help": "worst-group reweighting of the gender loss: each (data set, race group)'s faces weigh (its mean "
                "training gender loss in the last epoch / the mean) to this power, so groups answered worse count "
                "more (training.fit.gender_groups); 0: every face alike", "flag": "--gender-groups"})

    def __post_init__(self) -> None:
        if self.age_reweight not in AGE_REWEIGHTS:
            raise ValueError(f"--age-reweight must be one of {', '.join(AGE_REWEIGHTS)}, not {self.age_reweight!r}")
        if self.gender_groups < 0:
            raise ValueError(f"--gender-groups must be 0 (off) or more, not {self.gender_groups}")


AGE_REWEIGHTS = ("none", "lds")


def multitask_loss(
    age_logits: torch.Tensor,
    gender_logit: torch.Tensor,
    age_low: torch.Tensor,
    age_high: torch.Tensor,
    genders: torch.Tensor,
    age_min: int,
    weights: LossWeights,
    age_weight_table: torch.Tensor | None = None,
    gender_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the task losses, and each part as a float for logging.

    `age_weight_table` (per year, from `inverse_sqrt_weights`) weighs each face's age loss;
    `gender_weights` (per face, from `training.fit.gender_groups`) each face's gender loss.
    """
    total = age_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if weights.age:
        a = age_losses(age_logits, age_low, age_high, age_min, weights.age_sigma, weights.age_l1)
        if age_weight_table is not None:
            a = a * face_weights(age_weight_table, age_low, age_high, age_min)
        a = a.mean()
        total = total + weights.age * a
        parts["age_loss"] = a.item()
    if weights.gender:
        g = gender_loss(gender_logit, genders, gender_weights)
        total = total + weights.gender * g
        parts["gender_loss"] = g.item()
    return total, parts
