"""The two task heads shared by both models, and how their outputs become years and probabilities.

The age head predicts a distribution over whole years (one logit per year, AGE_MIN..AGE_MAX).
The age shown is its mean or, for a model calibrated with `estimate="median"`, its median: the
answer with the least expected absolute error under the distribution, and so, for a model whose
distributions are honest, the smaller MAE; next to a bound (babies) or a thin tail (the old) the
two differ by a year or more. The range is read from the same distribution by a rule:

- `SpreadRule` (every model calibrated since round six): the estimate minus and plus multiples of
  the distribution's own spread (its root-mean-square distance from the estimate), the multiples a
  smooth function of the estimate. A face the model is unsure of gets a wide range, a clear one a
  narrow range; the range always holds the age shown. The multiples are normalised conformal
  quantiles fitted on validation faces (training.evaluation.ranges), read either at the estimate
  (calibrated so that each *estimate* gets its coverage) or at each age the range might hold
  (`multiples_at="age"`: a confidence belt, calibrated so that each *true age* gets it, which
  follows a model's regression to the mean: the ranges of estimates near 60 reach up to the
  over-70s that get such estimates).
- `RangeRule` (configs written before): between two percentiles of the distribution, chosen by
  region of the estimate. Kept so that older model folders read as they always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

# The years the age head has a bin for: UTKFace's range, which every other data set's ages fall in.
AGE_MIN, AGE_MAX = 1, 116
# Which point of an age distribution is the age shown (SpreadRule.estimate, `point_estimate`).
AGE_ESTIMATES = ("mean", "median")
# Where a SpreadRule reads its multiples: at the face's estimate, or at each age its range might hold.
MULTIPLES_AT = ("estimate", "age")


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
    # Its estimate is always the (untempered) mean: configs written with it were calibrated so.
    estimate: ClassVar[str] = "mean"

    def __post_init__(self) -> None:
        if not len(self.starts) == len(self.lower) == len(self.upper) >= 1:
            raise ValueError("a range rule needs one start, lower and upper level per region")
        if any(not 0.0 <= lo <= hi <= 1.0 for lo, hi in zip(self.lower, self.upper)):
            raise ValueError(f"range levels must satisfy 0 <= lower <= upper <= 1: {self.lower}, {self.upper}")

    @classmethod
    def central(cls, level: float, temperature: float = 1.0) -> RangeRule:
        """The central `level` of the distribution at `temperature`, for every estimate."""
        return cls(lower=((1 - level) / 2,), upper=((1 + level) / 2,), temperature=temperature)

    def region(self, estimate: torch.Tensor) -> torch.Tensor:
        """Index of the region each estimate falls in."""
        return torch.bucketize(estimate.float(), torch.tensor(self.starts[1:], device=estimate.device), right=True)

    def read(self, probs: torch.Tensor, estimate: torch.Tensor, age_min: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The range [low, high] in years of (already tempered) distributions `probs` over the years from
        `age_min`, with estimates `estimate`."""
        region = self.region(estimate)
        lower = torch.tensor(self.lower, device=probs.device)[region]
        upper = torch.tensor(self.upper, device=probs.device)[region]
        cdf = probs.cumsum(dim=-1)
        low, high = _first_reaching(cdf, lower.unsqueeze(-1)), _first_reaching(cdf, upper.unsqueeze(-1))
        return (low + age_min).float(), (high + age_min).float()


@dataclass(frozen=True)
class SpreadRule:
    """The range as the estimate minus `below` and plus `above` times the spread of its distribution.

    The estimate is the distribution's mean or median (`estimate`, AGE_ESTIMATES); the spread is the
    distribution's root-mean-square distance from it, raised to `power` (1: as it is; above 1,
    the ranges of faces the model is sure of narrow and those of faces it is unsure of widen);
    the multiples are read by linear interpolation between `knots` (constant beyond the first and
    last), so the range changes smoothly with the estimate. Where they are read (`multiples_at`):

    - "estimate": at the face's estimate m; the range is [m - below(m) s, m + above(m) s].
    - "age": at each year y the range might hold; y is inside when m - below(y) s < y + 1/2 and
      y - 1/2 <= m + above(y) s, i.e. when m lies in y's acceptance band, the estimates that faces
      truly y years old get (a Neyman confidence belt, inverted). Fitted per true age, it holds its
      coverage for every true age rather than for every estimate; the range is the years inside,
      from the first to the last.

    Bounds are whole years and always include the rounded estimate, the age shown; the range is at
    most `max_width` years wide. The default is a Gaussian's central 80 % everywhere.
    """

    knots: tuple[float, ...] = (float(AGE_MIN),)
    below: tuple[float, ...] = (1.2816,)
    above: tuple[float, ...] = (1.2816,)
    # No range is wider than this many years: one that would be is narrowed towards the estimate, both
    # sides alike (a range of 40 years or more says little; a distribution that wide is often two guesses).
    max_width: float = 40.0
    # The multiples absorb the units (years to the power): only the shape of the spread's effect changes.
    power: float = 1.0
    # Which point of the distribution is the age shown and the range's centre.
    estimate: str = "mean"
    # Where the multiples are read (MULTIPLES_AT): "estimate" for every config written before round nine.
    multiples_at: str = "estimate"
    # The spread is that of the distribution the estimate is read from: never tempered.
    temperature: ClassVar[float] = 1.0

    def __post_init__(self) -> None:
        if not len(self.knots) == len(self.below) == len(self.above) >= 1:
            raise ValueError("a spread rule needs one below and one above multiple per knot")
        if any(later <= earlier for earlier, later in zip(self.knots, self.knots[1:])):
            raise ValueError(f"knots must increase: {self.knots}")
        if min(self.below + self.above) < 0:
            raise ValueError(f"multiples must be at least 0: {self.below}, {self.above}")
        if self.max_width < 2:
            raise ValueError(f"max_width must be at least 2 years, not {self.max_width}")
        if self.power <= 0:
            raise ValueError(f"power must be above 0, not {self.power}")
        if self.estimate not in AGE_ESTIMATES:
            raise ValueError(f"estimate must be one of {', '.join(AGE_ESTIMATES)}, not {self.estimate!r}")
        if self.multiples_at not in MULTIPLES_AT:
            raise ValueError(f"multiples_at must be one of {', '.join(MULTIPLES_AT)}, not {self.multiples_at!r}")

    def multiples(self, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (below, above) multiples of the spread at each estimate (or, multiples_at "age", each age)."""
        return (_interpolate(estimate, self.knots, self.below), _interpolate(estimate, self.knots, self.above))

    def read(self, probs: torch.Tensor, estimate: torch.Tensor, age_min: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The range [low, high] in years of distributions `probs` over the years from `age_min`, with
        estimates `estimate` (read from `probs` as `self.estimate` says)."""
        age_max = age_min + probs.shape[-1] - 1
        spread = age_spread(probs, estimate, age_min, self.power)
        if self.multiples_at == "estimate":
            below, above = self.multiples(estimate)
            reach_below, reach_above = below * spread, above * spread
        else:
            reach_below, reach_above = self._belt_reach(estimate, spread, age_min, age_max)
        # Narrowed to max_width - 1 before rounding, so that the rounded bounds lie at most max_width apart.
        narrowed = ((self.max_width - 1) / (reach_below + reach_above).clamp_min(1e-6)).clamp(max=1.0)
        shown = torch.round(estimate)
        low = torch.minimum(torch.round(estimate - reach_below * narrowed), shown).clamp(age_min, age_max)
        high = torch.maximum(torch.round(estimate + reach_above * narrowed), shown).clamp(age_min, age_max)
        return low, high

    def _belt_reach(self, estimate: torch.Tensor, spread: torch.Tensor, age_min: int, age_max: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """How far below and above the estimate the belt's range reaches: to its first and last year inside."""
        years = age_bins(age_min, age_max).to(estimate.device)
        below, above = self.multiples(years)
        m, s = estimate.float().unsqueeze(-1), spread.unsqueeze(-1)
        inside = (m - below * s < years + 0.5) & (years - 0.5 <= m + above * s)
        # With multiples of at least 0 the year shown is always inside; where rounding leaves none, the
        # range is the year shown alone (the caller includes it).
        first = torch.where(inside, years, torch.inf).amin(dim=-1)
        last = torch.where(inside, years, -torch.inf).amax(dim=-1)
        m = m.squeeze(-1)
        return (m - first).clamp_min(0.0), (last - m).clamp_min(0.0)  # none inside: -inf, so 0


# Either rule reads a range from a distribution; which one a model uses is in its config.
AgeRangeRule = RangeRule | SpreadRule


def age_spread(probs: torch.Tensor, centre: torch.Tensor, age_min: int, power: float = 1.0) -> torch.Tensor:
    """The root-mean-square distance in years of distributions `probs` over the years from `age_min` from
    `centre` (the standard deviation when it is the mean), raised to `power` (SpreadRule.power: the rule's
    read and its fit take the spread from here alike)."""
    years = age_bins(age_min, age_min + probs.shape[-1] - 1).to(probs.device)
    return ((years - centre.float().unsqueeze(-1)) ** 2 * probs.float()).sum(dim=-1).sqrt() ** power


def _interpolate(x: torch.Tensor, knots: tuple[float, ...], values: tuple[float, ...]) -> torch.Tensor:
    """Piecewise-linear through (knots, values), constant beyond the ends (numpy's interp, in torch)."""
    xp = torch.tensor(knots, dtype=torch.float32, device=x.device)
    fp = torch.tensor(values, dtype=torch.float32, device=x.device)
    if len(knots) == 1:
        return fp[0].expand(x.shape).clone()
    x = x.float().clamp(xp[0], xp[-1])
    i = torch.bucketize(x, xp[1:-1], right=True)
    t = (x - xp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + t * (fp[i + 1] - fp[i])


@dataclass(frozen=True)
class AgeEstimate:
    years: torch.Tensor  # the estimate (the age shown, before rounding), float
    low: torch.Tensor  # years, integer-valued
    high: torch.Tensor
    probs: torch.Tensor | None = None  # the distribution the range is read from (tempered by a RangeRule)


def age_bins(age_min: int, age_max: int) -> torch.Tensor:
    return torch.arange(age_min, age_max + 1, dtype=torch.float32)


DEFAULT_RANGE = SpreadRule()


def decode_age(logits: torch.Tensor, age_min: int, rule: AgeRangeRule = DEFAULT_RANGE) -> AgeEstimate:
    """The estimate of the predicted distribution (its mean or median, as `rule.estimate` says), and its
    range as `rule` reads it.

    The estimate is read from the untempered distribution, whatever shape the range is given.
    """
    estimate = point_estimate(torch.softmax(logits.float(), dim=-1), age_min, rule.estimate)
    probs = torch.softmax(logits.float() / rule.temperature, dim=-1)
    low, high = rule.read(probs, estimate, age_min)
    return AgeEstimate(years=estimate, low=low, high=high, probs=probs)


def point_estimate(probs: torch.Tensor, age_min: int, kind: str = "mean") -> torch.Tensor:
    """The mean or the median (AGE_ESTIMATES) in years of distributions `probs` over the years from `age_min`.

    The median is that of the distribution spread evenly over each year's bin [year - 1/2, year + 1/2]:
    continuous in the probabilities, as the mean is, so that a face's estimate moves smoothly with them
    (the live view's frames) instead of in whole years.
    """
    years = age_bins(age_min, age_min + probs.shape[-1] - 1).to(probs.device)
    probs = probs.float()
    if kind == "mean":
        return probs @ years
    if kind != "median":
        raise ValueError(f"estimate must be one of {', '.join(AGE_ESTIMATES)}, not {kind!r}")
    p = probs.double()
    cdf = p.cumsum(dim=-1)
    k = _first_reaching(cdf, 0.5).unsqueeze(-1)  # the bin the median lies in
    inside = p.gather(-1, k)
    share = ((0.5 - (cdf.gather(-1, k) - inside)) / inside.clamp_min(1e-12)).clamp(0.0, 1.0)  # of that bin's width
    return (years[k].double() - 0.5 + share).squeeze(-1).float()


def _first_reaching(cdf: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    # A small tolerance so a cdf that reaches the level only up to rounding still counts.
    reached = cdf >= level - 1e-6
    return reached.float().argmax(dim=-1)


def gender_probability(logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """P(female) from the gender logit."""
    return torch.sigmoid(logit.float() / temperature)


GENDER_LABELS = ("male", "female")
UNSURE = "unsure"


def gender_call(p_female: float, unsure_below: float = 0.5, held: str | None = None, margin: float = 0.0) -> str:
    """"female", "male" or "unsure" for P(female) = `p_female`: unsure while the confidence max(p, 1 - p)
    is below `unsure_below`.

    With the call `held` so far (the live view's), the call moves only past `margin` beyond the
    threshold (hysteresis): a side is kept while its confidence stays at least `unsure_below - margin`
    and taken only from `unsure_below + margin` on, so a face near the threshold keeps its text.
    """
    side = GENDER_LABELS[int(p_female >= 0.5)]
    confidence = max(p_female, 1 - p_female)
    if held is None or margin <= 0:
        return side if confidence >= unsure_below else UNSURE
    if held == side and confidence >= unsure_below - margin:
        return side
    if held in GENDER_LABELS and held != side and 1 - confidence >= unsure_below - margin:
        return held  # the other side's confidence is 1 - confidence: still within the margin
    return side if confidence >= unsure_below + margin else UNSURE
