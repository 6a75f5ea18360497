"""How a label's years are weighed: one year, a group of equally likely years, or the open group at the top.

FairFace's "more than 70" runs to the age head's last bin (116), but its faces are not spread evenly
up to there: most are in their seventies and few are over 90. Inside such an open-ended group the
years are weighed by how UTKFace's faces of 70 and over are spread, so that neither the range
coverage of the group nor the age density used for reweighting puts a tenth of these faces at
100 and over.
"""

from __future__ import annotations

import torch

from demo.heads import AGE_MAX, age_bins

# UTKFace's faces by age from 70 (the shared archive, 1,532 faces: `tar tzf UTKFace.tar.gz | sed 's#.*/##' |
# cut -d_ -f1`), ages with none counted as 0. Labels heap on round ages (75, 80, 85, 90), so the
# prior is these counts smoothed over OLD_PRIOR_SIGMA years.
OLD_FROM = 70
OLD_COUNTS = (129, 28, 85, 56, 31, 138, 50, 27, 61, 20, 119, 20, 39, 15, 23, 142, 25, 8, 32, 33, 75, 1, 11, 5, 0, 8,
              17, 0, 0, 9, 11, 2, 0, 1, 0, 2, 0, 0, 0, 0, 4, 1, 0, 0, 0, 1, 3)
OLD_PRIOR_SIGMA = 3.0


def old_age_prior() -> torch.Tensor:
    """P(age) for ages OLD_FROM..AGE_MAX among faces of OLD_FROM and over (sums to 1)."""
    ages = torch.arange(OLD_FROM, AGE_MAX + 1, dtype=torch.float32)
    counts = torch.tensor(OLD_COUNTS, dtype=torch.float32)
    kernel = torch.exp(-0.5 * ((ages[:, None] - ages[None, :]) / OLD_PRIOR_SIGMA) ** 2)
    smoothed = (kernel / kernel.sum(dim=0, keepdim=True)) @ counts  # each count spread, none lost at the ends
    return smoothed / smoothed.sum()


def year_weights(age_low: torch.Tensor, age_high: torch.Tensor, age_min: int, num_bins: int) -> torch.Tensor:
    """Faces x bins: how likely each year is for each face's label; every row sums to 1.

    A year label is that year; a group is its years, equally likely, except a group that runs to
    the last bin from OLD_FROM or later (open-ended, "more than 70"), weighed by `old_age_prior`.
    """
    bins = age_bins(age_min, age_min + num_bins - 1).to(age_low.device)
    low, high = age_low[:, None].float(), age_high[:, None].float()
    inside = ((bins[None, :] >= low) & (bins[None, :] <= high)).float()
    prior = torch.ones(num_bins, device=age_low.device)
    old = bins >= OLD_FROM
    prior[old] = old_age_prior().to(prior.device)[: int(old.sum())]
    open_ended = ((age_high == age_min + num_bins - 1) & (age_low >= OLD_FROM) & (age_low < age_high))[:, None]
    weights = torch.where(open_ended, inside * prior[None, :], inside)
    return weights / weights.sum(dim=1, keepdim=True)


def labelled_age(age_low: torch.Tensor, age_high: torch.Tensor, age_min: int, num_bins: int) -> torch.Tensor:
    """Each face's labelled age in years: its year, or the mean of its group's years as `year_weights` weighs them
    (the middle, 14.5 for 10-19; for the open "more than 70", the ages of UTKFace's over-70s)."""
    bins = age_bins(age_min, age_min + num_bins - 1).to(age_low.device)
    return year_weights(age_low, age_high, age_min, num_bins) @ bins
