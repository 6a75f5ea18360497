"""Multi-task loss: age as a smoothed distribution over years plus an L1 term, gender as BCE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.heads import age_bins


def soft_age_targets(ages: torch.Tensor, age_min: int, num_bins: int, sigma: float) -> torch.Tensor:
    """A Gaussian of width `sigma` years around each true age, normalised over the bins.

    Neighbouring years are nearly as right as the true one; one-hot targets would punish
    predicting 33 for a 34-year-old as much as predicting 80.
    """
    bins = age_bins(age_min, age_min + num_bins - 1).to(ages.device)
    weights = torch.exp(-0.5 * ((bins[None, :] - ages[:, None].float()) / sigma) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def age_loss(
    logits: torch.Tensor, ages: torch.Tensor, age_min: int, sigma: float = 2.0, l1_weight: float = 0.1
) -> torch.Tensor:
    """Cross-entropy against soft targets + l1_weight * |expected age - age| (in years)."""
    targets = soft_age_targets(ages, age_min, logits.shape[-1], sigma)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    ce = -(targets * log_probs).sum(dim=-1).mean()
    bins = age_bins(age_min, age_min + logits.shape[-1] - 1).to(logits.device)
    expected = log_probs.exp() @ bins
    return ce + l1_weight * (expected - ages.float()).abs().mean()


def gender_loss(logit: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit.float(), gender.float())


@dataclass(frozen=True)
class LossWeights:
    """Task weights; a weight of 0 trains that head not at all (single-task runs)."""

    age: float = 1.0
    gender: float = 1.0
    age_sigma: float = 2.0
    age_l1: float = 0.1


def multitask_loss(
    age_logits: torch.Tensor,
    gender_logit: torch.Tensor,
    ages: torch.Tensor,
    genders: torch.Tensor,
    age_min: int,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the task losses, and each part as a float for logging."""
    total = age_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    if weights.age:
        a = age_loss(age_logits, ages, age_min, weights.age_sigma, weights.age_l1)
        total = total + weights.age * a
        parts["age_loss"] = a.item()
    if weights.gender:
        g = gender_loss(gender_logit, genders)
        total = total + weights.gender * g
        parts["gender_loss"] = g.item()
    return total, parts
