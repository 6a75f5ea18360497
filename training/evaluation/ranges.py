"""The age range's fit (a `demo.heads.SpreadRule`) and its honest measurement on validation.

The range is the estimate m minus b and plus a times the spread s of the face's own distribution
(its standard deviation, or that to a power: `power`), b and a read between a few knots. The
multiples are normalised split-conformal quantiles (Papadopoulos et al. 2002; Lei et al. 2018): a
year y is inside the range when b > (m - y - 1/2) / s and a >= (y - 1/2 - m) / s (the bounds are
rounded to years), so b is the (1 + coverage) / 2 quantile of the first score and a that of the
second, over the true ages of the validation faces; misses below and above are each
(1 - coverage) / 2, except where one side cannot miss its half (a true age of 1 lies above no
range): the other side takes the rest.

Localised by estimate: knot k's quantiles weigh each face by the linear-interpolation ("hat")
weight its estimate gives knot k, the same weights that read the multiples back, so each knot is
fitted on the faces whose ranges it shapes, and the width changes smoothly with the estimate. Or
localised by true age (`multiples_at="age"`, a confidence belt): knot k's quantiles weigh each
(face, true year) pair by the hat weight of that year, and b and a are read at each year the range
might hold (`SpreadRule.read`), so each true age, not each estimate, gets the coverage: a model's
regression to the mean (the old answered younger, teenagers older) moves the ranges with it. A
face labelled with an age group counts by the weight of each of its years (`year_weights`).
Weighed by band (the default): each data set alike, and within one each true age band or group
alike, so that the rare bands (the old, babies, FairFace's 70+) pull the quantiles of the
estimates they get as hard as the common ones. The fit has no target per band: the bands are the
check, measured on faces the rule was not fitted on (`cross_fitted`). (`sweeps` moves the multiples
to the bands afterwards, as round five's levels were: measured as an alternative, docs/training.md;
it fits the faces it is fitted on and holds less on fresh ones.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from demo.heads import AgeRangeRule, SpreadRule, age_bins, age_spread, decode_age, point_estimate
from training.data import spec
from training.data.ages import year_weights
from training.evaluation.metrics import AGE_BREAKDOWNS, WIDE_RANGE, Outputs, range_coverage

# Estimates at which the multiples are fitted (years): close together where a year means most.
SPREAD_KNOTS = (1.0, 3.0, 8.0, 15.0, 25.0, 40.0, 60.0, 80.0)
# True ages at which a belt's multiples are fitted: two more among the teenagers, whom the models answer
# older and older from 10 to 19 (FairFace's teenagers most of all), so that the bias is followed year by year.
BELT_KNOTS = (1.0, 3.0, 8.0, 13.0, 18.0, 25.0, 40.0, 60.0, 80.0)
# A knot whose faces (summed hat weights) are fewer than this is dropped: its neighbours' multiples
# reach over it (beyond the last knot kept, the last multiples hold); with none left, one pair for all.
MIN_KNOT_FACES = 30.0
# How faces are weighed in the fit: "bands" (each data set alike, and each true age band or group
# within it) or "faces" (each data set alike, each of its faces alike).
BALANCES = ("bands", "faces")


def fit_spread_rule(out: Outputs, age_min: int, coverage: float = 0.8, knots: tuple[float, ...] | None = None,
                    balance: str = "bands", sweeps: int = 0, power: float = 1.0, estimate: str = "mean",
                    multiples_at: str = "estimate") -> SpreadRule:
    """The SpreadRule whose ranges hold `coverage` of the true ages of the faces in `out`, localised by
    estimate (or, `multiples_at` "age", by true age) between `knots` (default SPREAD_KNOTS, or BELT_KNOTS
    by true age; module docstring), with the spread raised to `power`, around the distribution's `estimate`
    (AGE_ESTIMATES). `out.age_logits` as served (logit offsets added)."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, not {balance!r}")
    if sweeps and multiples_at != "estimate":
        raise ValueError("the band balance (sweeps) moves multiples read at the estimate only")
    if knots is None:
        knots = SPREAD_KNOTS if multiples_at == "estimate" else BELT_KNOTS
    probs = torch.softmax(out.age_logits.float(), dim=-1)
    years = age_bins(age_min, age_min + probs.shape[-1] - 1)
    centre = point_estimate(probs, age_min, estimate)  # m: the mean or the median
    spread = age_spread(probs, centre, age_min, power).clamp_min(1e-3)
    weights = year_weights(out.age_low, out.age_high, age_min, probs.shape[-1])  # faces x years
    face_weight = torch.from_numpy(_face_weights(out, balance))
    need_below = (centre[:, None] - years[None, :] - 0.5) / spread[:, None]  # covered below when b exceeds it
    need_above = (years[None, :] - 0.5 - centre[:, None]) / spread[:, None]  # covered above when a reaches it

    def localised(knots: tuple[float, ...]) -> torch.Tensor:
        """Faces x years x knots: how much each (face, year) pair weighs in each knot's quantiles."""
        if multiples_at == "estimate":
            return weights[:, :, None] * _hat_weights(centre, knots)[:, None, :]
        return weights[:, :, None] * _hat_weights(years, knots)[None, :, :]

    local = localised(knots)
    kept = [k for k in range(len(knots)) if float(local[:, :, k].sum()) >= MIN_KNOT_FACES]
    if len(kept) < len(knots):  # the faces of a dropped knot go to the knots kept beside it
        knots = tuple(knots[k] for k in kept) or (float(age_min),)
        local = localised(knots)
    below, above = [], []
    for k in range(len(knots)):
        b, a = _knot_multiples(need_below, need_above, local[:, :, k] * face_weight[:, None], coverage)
        below.append(b)
        above.append(a)
    rule = SpreadRule(knots=tuple(float(k) for k in knots), below=tuple(round(b, 4) for b in below),
                      above=tuple(round(a, 4) for a in above), power=power, estimate=estimate,
                      multiples_at=multiples_at)
    return _balance_multiples(out, rule, centre, spread, weights, coverage, sweeps) if sweeps else rule


def _knot_multiples(need_below: torch.Tensor, need_above: torch.Tensor, w: torch.Tensor, coverage: float
                    ) -> tuple[float, float]:
    """One knot's (below, above) multiples: each side misses (1 - coverage) / 2 of the weight `w` on the
    (face, year) scores, but a side that cannot miss its half (a true age next to the head's first year
    hardly ever lies above a range) leaves the rest to the other."""
    half_miss = (1 - coverage) / 2

    def multiple_below(miss: float) -> float:
        # Strictly above the quantile: a face exactly on it is inside (rounding of the lower bound).
        return max(0.0, _weighted_quantile(need_below, w, 1 - miss) + 1e-4)

    def multiple_above(miss: float) -> float:
        return max(0.0, _weighted_quantile(need_above, w, 1 - miss))

    b, a = multiple_below(half_miss), multiple_above(half_miss)
    short_above = half_miss - _weighted_share(need_above > a, w)
    short_below = half_miss - _weighted_share(need_below >= b, w)
    if short_above > 0.01:
        b = multiple_below(half_miss + short_above)
    elif short_below > 0.01:
        a = multiple_above(half_miss + short_below)
    return b, a


def fit_global_spread(out: Outputs, age_min: int, coverage: float = 0.8, estimate: str = "mean") -> SpreadRule:
    """One pair of multiples for every estimate (the alternative with two parameters)."""
    return fit_spread_rule(out, age_min, coverage, knots=(float(age_min),), balance="faces", estimate=estimate)


def _hat_weights(centre: torch.Tensor, knots: tuple[float, ...]) -> torch.Tensor:
    """Faces x knots: the weights linear interpolation between `knots` gives each knot at each estimate."""
    if len(knots) == 1:
        return torch.ones(len(centre), 1)
    xp = torch.tensor(knots)
    x = centre.float().clamp(xp[0], xp[-1])
    i = torch.bucketize(x, xp[1:-1], right=True)
    t = (x - xp[i]) / (xp[i + 1] - xp[i])
    hats = torch.zeros(len(centre), len(knots))
    hats[torch.arange(len(centre)), i] = 1 - t
    hats[torch.arange(len(centre)), i + 1] += t
    return hats


def band_rows(out: Outputs) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Per face, the index of its (data set, true age band or group) row, and the rows' names."""
    row = np.full(len(out.dataset), -1)
    names: list[tuple[str, str]] = []
    ages, races = out.age_low.numpy(), out.race.numpy()
    for d in out.dataset.unique().tolist():
        mine = (out.dataset == d).numpy()
        for breakdown in spec.at(d).breakdowns:
            if breakdown.key in AGE_BREAKDOWNS:
                for name, mask in breakdown.groups(ages, races).items():
                    if (mask & mine).any():
                        row[mask & mine] = len(names)
                        names.append((spec.at(d).name, name))
    return row, names


def _face_weights(out: Outputs, balance: str) -> np.ndarray:
    """Each data set's faces weigh 1 in all; with "bands", shared alike by its bands, then its faces."""
    weight = np.zeros(len(out.dataset))
    sets = out.dataset.numpy()
    if balance == "faces":
        for d in np.unique(sets):
            weight[sets == d] = 1 / (sets == d).sum()
        return weight.astype(np.float32)
    row, names = band_rows(out)
    for d in np.unique(sets):
        rows = np.unique(row[(sets == d) & (row >= 0)])
        for r in rows:
            weight[row == r] = 1 / (len(rows) * (row == r).sum())
    return weight.astype(np.float32)


def _weighted_share(mask: torch.Tensor, weights: torch.Tensor) -> float:
    """The share of the weight where `mask` holds."""
    return float((weights.double() * mask).sum() / weights.double().sum())


def _weighted_quantile(values: torch.Tensor, weights: torch.Tensor, q: float) -> float:
    """The smallest value v with at least q of the weight at or below v."""
    v, w = values.flatten(), weights.flatten()
    keep = w > 0
    v, w = v[keep], w[keep].double()
    order = torch.argsort(v)
    share = torch.cumsum(w[order], dim=0) / w.sum()
    at = int(torch.searchsorted(share, torch.tensor(q, dtype=share.dtype)).clamp(max=len(v) - 1))
    return float(v[order][at])


def cross_fitted(out: Outputs, age_min: int, fit: Callable[[Outputs], AgeRangeRule], folds: int = 2,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face, its range [low, high] from a rule `fit` on the other folds' faces only.

    Faces are dealt into `folds` at random (seeded), within each data set: the coverage of these
    ranges is a measurement, not the fit.
    """
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(out.dataset), dtype=torch.long)
    for d in out.dataset.unique():
        mine = torch.nonzero(out.dataset == d).flatten()
        fold[mine[torch.randperm(len(mine), generator=g)]] = torch.arange(len(mine)) % folds
    low, high = torch.zeros(len(fold)), torch.zeros(len(fold))
    for k in range(folds):
        rule = fit(out.subset(fold != k))
        est = decode_age(out.subset(fold == k).age_logits, age_min, rule)
        low[fold == k], high[fold == k] = est.low, est.high
    return low, high


def range_table(out: Outputs, low: torch.Tensor, high: torch.Tensor, age_min: int) -> dict:
    """Coverage and width of ranges [low, high] per data set and per its true age bands or groups:
    {set: {"all": row, band: row, ...}}, a row being {"n", "coverage", "width", "wide_share", "max_width"}."""
    covered = range_coverage(low, high, out.age_low, out.age_high, age_min, out.age_logits.shape[-1]).numpy()
    width = (high - low).numpy()
    row, names = band_rows(out)

    def summary(mask: np.ndarray) -> dict:
        return {"n": int(mask.sum()), "coverage": float(covered[mask].mean()), "width": float(width[mask].mean()),
                "wide_share": float((width[mask] >= WIDE_RANGE).mean()), "max_width": float(width[mask].max())}

    table: dict[str, dict] = {}
    for d in out.dataset.unique().tolist():
        mine = (out.dataset == d).numpy()
        table[spec.at(d).name] = {"all": summary(mine)}
    for r, (name, band) in enumerate(names):
        table[name][band] = summary(row == r)
    return table


def bands_outside(table: dict, aim: tuple[float, float] = (0.7, 0.9)) -> list[str]:
    """The rows of a `range_table` (bands and groups, not the data sets' totals) whose coverage is outside `aim`."""
    return [f"{name} {band}" for name, rows in table.items() for band, r in rows.items()
            if band != "all" and not aim[0] <= r["coverage"] <= aim[1]]


# The band balance (fit_spread_rule's `sweeps`): coordinate descent of each knot's multiples over this grid,
# every band's coverage aimed inside BAND_AIM, each data set's near the coverage, the mean width kept down.
MULTIPLES = tuple(float(v) for v in np.round(np.arange(0.0, 4.001, 0.05), 2))
BAND_AIM = (0.72, 0.88)
MISS_COST = 100.0
WIDTH_COST = 1e-3


def _balance_multiples(out: Outputs, rule: SpreadRule, centre: torch.Tensor, spread: torch.Tensor,
                       weights: torch.Tensor, coverage: float, sweeps: int) -> SpreadRule:
    """`rule` with each knot's (below, above) moved on MULTIPLES, knot by knot for `sweeps` sweeps, to bring
    every true age band and group inside BAND_AIM at the least width (the conformal fit's multiples to start)."""
    row, names = band_rows(out)
    rows = [row == r for r in range(len(names))]
    is_band = [True] * len(rows)
    for d in out.dataset.unique().tolist():
        rows.append((out.dataset == d).numpy())
        is_band.append(False)
    share = torch.from_numpy(np.stack(rows).astype(np.float32))
    share = share / share.sum(dim=1, keepdim=True)  # rows x faces
    is_band = torch.tensor(is_band)
    cum = torch.cat([torch.zeros_like(weights[:, :1]), weights.cumsum(dim=-1)], dim=-1)  # weight of years < bin
    top = weights.shape[1]
    hats = _hat_weights(centre, rule.knots)
    grid = torch.tensor(MULTIPLES)
    below, above = list(rule.below), list(rule.above)
    shown = torch.round(centre)

    def bounds(k: int, b: torch.Tensor, a: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin indices of low (faces x len(b)) and high (faces x len(a)) with knot k's multiples b, a."""
        h = hats[faces]
        rest_b = h @ torch.tensor(below) - h[:, k] * below[k]
        rest_a = h @ torch.tensor(above) - h[:, k] * above[k]
        m, s, shown_f = centre[faces, None], spread[faces, None], shown[faces, None]
        low = torch.minimum(torch.round(m - (rest_b[:, None] + h[:, k, None] * b) * s), shown_f)
        high = torch.maximum(torch.round(m + (rest_a[:, None] + h[:, k, None] * a) * s), shown_f)
        return (low.clamp(1, top) - 1).long(), (high.clamp(1, top) - 1).long()  # age_min 1 in the bins' index

    def covered(faces: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        w = cum[faces]
        return (w.gather(1, high + 1)[:, None, :] - w.gather(1, low)[:, :, None]).clamp(min=0)  # faces x B x A

    everyone = torch.arange(len(centre))
    for _ in range(sweeps):
        for k in range(len(rule.knots)):
            mine = torch.nonzero(hats[:, k] > 0).flatten()
            others = torch.nonzero(hats[:, k] == 0).flatten()
            if len(mine) == 0:
                continue
            low, high = bounds(k, grid, grid, mine)
            cover_mine = torch.einsum("rf,fba->rba", share[:, mine], covered(mine, low, high))
            width_mine = (high[:, None, :] - low[:, :, None]).float().sum(dim=0) / len(everyone)
            fixed_low, fixed_high = bounds(k, torch.tensor([below[k]]), torch.tensor([above[k]]), others)
            cover_rest = share[:, others] @ covered(others, fixed_low, fixed_high)[:, 0, 0]
            width_rest = float((fixed_high - fixed_low).float().sum()) / len(everyone)
            cover = cover_mine + cover_rest[:, None, None]
            band_miss = (BAND_AIM[0] - cover).clamp(min=0) ** 2 + (cover - BAND_AIM[1]).clamp(min=0) ** 2
            cost = MISS_COST * (band_miss * is_band[:, None, None]).sum(dim=0)
            cost = cost + ((cover - coverage) ** 2 * ~is_band[:, None, None]).sum(dim=0)
            cost = cost + WIDTH_COST * (width_mine + width_rest)
            b, a = divmod(int(torch.argmin(cost)), len(grid))
            below[k], above[k] = float(grid[b]), float(grid[a])
    return replace(rule, below=tuple(below), above=tuple(above))
