"""Multi-task loss: age from a year or from a group of years, gender as BCE.

An age in years (UTKFace) is learned as a smoothed distribution around it plus an L1 term on the
expected age. An age group (FairFace, e.g. 30-39) is learned from the probability the predicted
distribution puts inside the group's years, plus an L1 term on how far the expected age lies
outside the group. Both kinds can share a batch: a label is a range [low, high], a year when
low == high.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from demo.heads import age_bins


def soft_age_targets(ages: torch.Tensor, age_min: int, num_bins: int, sigma: float) -> torch.Tensor:
    """A Gaussian of width `sigma` years around each true age, normalised over the bins.

    Neighbouring years are nearly as right as the true one; one-hot targets would punish
    predicting 33 for a 34-year-old as much as predicting 80.
    """
    bins = age_bins(age_min, age_min + num_bins - 1).to(ages.device)
    weights = torch.exp(-0.5 * ((bins[None, :] - ages[:, None].float()) / sigma) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


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
    inside = (bins[None, :] >= low[:, None]) & (bins[None, :] <= high[:, None])
    group_nll = -torch.logsumexp(log_probs.masked_fill(~inside, float("-inf")), dim=-1)
    expected = log_probs.exp() @ bins
    outside = F.relu(low - expected) + F.relu(expected - high)  # |expected - age| for a year label
    return torch.where(year, ce, group_nll) + l1_weight * outside


def age_loss(logits: torch.Tensor, ages: torch.Tensor, age_min: int, sigma: float = 2.0,
             l1_weight: float = 0.1) -> torch.Tensor:
    """Mean loss for ages in years: cross-entropy against soft targets + l1_weight * |expected - age|."""
    return age_losses(logits, ages, ages, age_min, sigma, l1_weight).mean()


def gender_loss(logit: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit.float(), gender.float())


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


def multitask_loss(
    age_logits: torch.Tensor,
    gender_logit: torch.Tensor,
    age_low: torch.Tensor,
    age_high: torch.Tensor,
    genders: torch.Tensor,
    age_min: int,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the task losses, and each part as a float for logging."""
    total = age_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if weights.age:
        a = age_losses(age_logits, age_low, age_high, age_min, weights.age_sigma, weights.age_l1).mean()
        total = total + weights.age * a
        parts["age_loss"] = a.item()
    if weights.gender:
        g = gender_loss(gender_logit, genders)
        total = total + weights.gender * g
        parts["gender_loss"] = g.item()
    return total, parts
