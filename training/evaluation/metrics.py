"""Running a model over a split, the metrics we report, and post-hoc calibration."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from demo.checkpoint import forward_with_flip
from demo.heads import (
    DEFAULT_RANGE,
    AgeEstimate,
    AgeRangeRule,
    RangeRule,
    age_bins,
    decode_age,
    gender_probability,
    point_estimate,
)
from training.data import spec
from training.data.ages import labelled_age, year_weights
from training.data.spec import YEAR, DatasetSpec

# The age from which faces are few in every data set and the models weakest: reported on its own.
OLD_AGE = 60


@dataclass
class Outputs:
    """Raw model outputs and labels for some faces, on the CPU."""

    age_logits: torch.Tensor
    gender_logit: torch.Tensor
    age_low: torch.Tensor
    age_high: torch.Tensor  # == age_low for an age in years
    gender: torch.Tensor
    race: torch.Tensor
    dataset: torch.Tensor

    def subset(self, mask: torch.Tensor | np.ndarray) -> Outputs:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        return Outputs(**{k: v[mask] for k, v in vars(self).items()})

    @property
    def age(self) -> torch.Tensor:
        """The age in years, for faces labelled with one."""
        return self.age_low

    def of(self, dataset: str) -> Outputs:
        """The faces of one data set."""
        return self.subset(self.dataset == spec.index(dataset))


FIELDS = ("age_logits", "gender_logit", "age_low", "age_high", "gender", "race", "dataset")


@torch.inference_mode()
def collect_outputs(model: nn.Module, loader: DataLoader, device: str, channels_last: bool = False,
                    flip: str = "off") -> Outputs:
    """Run `model` over a loader of FaceDataset batches, with test-time flip `flip` (FLIP_MODES)."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FIELDS}
    for x, *labels in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cuda = device.startswith("cuda")
        half = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16  # older GPUs: fp16
        with torch.autocast("cuda", dtype=half, enabled=cuda):
            age_logits, gender_logit = forward_with_flip(model, x, flip)
        parts["age_logits"].append(age_logits.float().cpu())
        parts["gender_logit"].append(gender_logit.float().cpu())
        for key, value in zip(FIELDS[2:], labels):
            parts[key].append(value)
    return Outputs(**{k: torch.cat(v) for k, v in parts.items()})


def cpu_ms_per_face(model: nn.Module, input_size: int, runs: int = 30, warmup: int = 5, flip: str = "off") -> float:
    """Median CPU milliseconds for one face (a batch of one; two with flip) through `model`, after warm-up.

    Model and input in channels_last, as `demo.checkpoint.LoadedModel` serves them.
    """
    model = model.to("cpu", memory_format=torch.channels_last).eval()
    x = torch.randn(1, 3, input_size, input_size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            forward_with_flip(model, x, flip)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int) -> list[tuple[int, float, float]]:
    """(count, mean confidence, accuracy) of each non-empty equal-width confidence bin over 0.5..1.

    Confidence is that of the predicted class, max(p, 1 - p) for P(female) = p.
    """
    confidence = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == (y == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [(int(mask.sum()), float(confidence[mask].mean()), float(correct[mask].mean()))
            for mask in (which == b for b in range(bins)) if mask.any()]


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of P(female): |accuracy - confidence| averaged over equal-width confidence bins."""
    return float(sum(n / len(p) * abs(acc - conf) for n, conf, acc in reliability_bins(p, y, bins)))


def range_coverage(low: torch.Tensor, high: torch.Tensor, age_low: torch.Tensor, age_high: torch.Tensor,
                   age_min: int, num_bins: int) -> torch.Tensor:
    """Per face, how likely its true age is inside the predicted range [low, high] (years).

    1 or 0 for an age in years; for a group, the weight of its years inside the range, the years
    weighed as `year_weights` says (equally, but for the open group at the top).
    """
    bins = age_bins(age_min, age_min + num_bins - 1)
    inside = (bins[None, :] >= low[:, None]) & (bins[None, :] <= high[:, None])
    return (year_weights(age_low, age_high, age_min, num_bins) * inside).sum(dim=1)


def _coverage(est: AgeEstimate, out: Outputs, age_min: int) -> torch.Tensor:
    return range_coverage(est.low, est.high, out.age_low, out.age_high, age_min, out.age_logits.shape[-1])


def year_metrics(out: Outputs, age_min: int, rule: AgeRangeRule = DEFAULT_RANGE,
                 gender_temperature: float = 1.0, unsure_below: float = 0.5) -> dict[str, float]:
    """Age in years (MAE, CS@5, range coverage and width) and gender metrics over the faces in `out`."""
    est = decode_age(out.age_logits, age_min, rule)
    err = (est.years - out.age.float()).abs()
    old = out.age >= OLD_AGE
    return {
        "n": int(len(err)),
        "age_mae": float(err.mean()),
        "age_mae_60_plus": float(err[old].mean()) if old.any() else math.nan,
        "age_signed_error": signed_error(est, out, age_min),
        "age_cs5": float((err <= 5).float().mean()),
        **range_metrics(est, out, age_min),
        **gender_metrics(out, gender_temperature, unsure_below),
    }


def group_metrics(out: Outputs, dataset: DatasetSpec, age_min: int, rule: AgeRangeRule = DEFAULT_RANGE,
                  gender_temperature: float = 1.0, unsure_below: float = 0.5) -> dict[str, float]:
    """Age-group labels: the data set's group the estimate falls in, exact and within one, and gender."""
    est = decode_age(out.age_logits, age_min, rule)
    off = dataset.groups_apart(est.years.tolist(), out.age_low.tolist())
    return {
        "n": int(len(off)),
        "age_group_exact": float((off == 0).mean()),
        "age_group_within_one": float((off <= 1).mean()),
        "age_signed_error": signed_error(est, out, age_min),
        **range_metrics(est, out, age_min),
        **gender_metrics(out, gender_temperature, unsure_below),
    }


def signed_error(est: AgeEstimate, out: Outputs, age_min: int) -> float:
    """The mean estimate less each face's labelled age: its year, or the mean of its group's years as training
    weighs them (the middle, 14.5 for 10-19; for the open "more than 70", the ages of UTKFace's over-70s).
    Above 0: the faces are made older."""
    labelled = labelled_age(out.age_low, out.age_high, age_min, out.age_logits.shape[-1])
    return float((est.years - labelled).mean())


# A range this many years wide or wider says little: its share is reported (aimed under 1 %).
WIDE_RANGE = 40


def range_metrics(est: AgeEstimate, out: Outputs, age_min: int) -> dict[str, float]:
    """How often the ranges hold the true age, how wide they are, and whether each holds its own estimate."""
    return range_summary(_coverage(est, out, age_min), est.low, est.high, torch.round(est.years))


def range_summary(covered: torch.Tensor, low: torch.Tensor, high: torch.Tensor, shown: torch.Tensor
                  ) -> dict[str, float]:
    """The numbers reported of a set of ranges, from each face's coverage (`range_coverage`), its range [low, high]
    and the age shown: the mean coverage and width, the share WIDE_RANGE years wide or more, the widest, and how
    many do not hold their own shown age (the batch CLI's rows are scored by the same, tools.score_predictions)."""
    width = (high - low).float()
    return {
        "age_range_coverage": float(covered.float().mean()),
        "age_range_width": float(width.mean()),
        "age_range_wide_share": float((width >= WIDE_RANGE).float().mean()),
        "age_range_max_width": float(width.max()) if len(width) else math.nan,
        "age_outside_range": int(((shown < low) | (shown > high)).sum()),
    }


def gender_metrics(out: Outputs, gender_temperature: float = 1.0, unsure_below: float = 0.5) -> dict[str, float]:
    """Accuracy on every face; and the share of faces called "unsure" (confidence below `unsure_below`)
    with the accuracy on the rest."""
    p = gender_probability(out.gender_logit, gender_temperature).numpy()
    y = out.gender.numpy()
    eps = 1e-7
    right = (p >= 0.5) == (y == 1)
    sure = np.maximum(p, 1 - p) >= unsure_below
    return {
        "gender_accuracy": float(right.mean()),
        "gender_unsure_share": float(1 - sure.mean()),
        "gender_accuracy_sure": float(right[sure].mean()) if sure.any() else math.nan,
        "gender_ece": expected_calibration_error(p, y),
        "gender_nll": float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))),
    }


# The unsure threshold is the highest gender confidence below which the validation faces' calls are
# right at most this often: calls hardly better than a coin's (50 %).
UNSURE_ACCURACY = 0.6
UNSURE_GRID = tuple(float(v) for v in np.round(np.arange(0.5, 0.9001, 0.01), 2))


def fit_unsure_below(out: Outputs, gender_temperature: float = 1.0) -> float:
    """The gender confidence under which a model says "unsure" (UNSURE_ACCURACY), on the faces of `out`."""
    p = gender_probability(out.gender_logit, gender_temperature).numpy()
    right = (p >= 0.5) == (out.gender.numpy() == 1)
    confidence = np.maximum(p, 1 - p)
    chosen = 0.5
    for t in UNSURE_GRID:
        below = confidence < t
        if below.any() and right[below].mean() <= UNSURE_ACCURACY:
            chosen = t
    return chosen


def fit_age_adjustment(out: Outputs, age_min: int, log_density: torch.Tensor, tolerance: float,
                       estimate: str = "mean") -> float:
    """The strength tau of post-hoc logit adjustment, `logits - tau * log_density`, for `out`.

    A model trained on imbalanced ages answers with their prior folded in, pulling rare (old)
    faces towards common ages; subtracting tau times the log of the training faces' age density
    takes part of that prior back out (Menon et al., "Long-tail learning via logit adjustment",
    2021). tau = 1 undoes it all, which costs accuracy on the common ages: the tau chosen is the
    largest on a grid over 0..1 whose MAE on the year-labelled faces of `out` is at most
    `tolerance` years above tau = 0's (0 when `out` has no such faces), with the age read as `estimate`
    (AGE_ESTIMATES) says.
    """
    year = out.age_low == out.age_high
    if not year.any() or tolerance <= 0:
        return 0.0
    logits, ages = out.age_logits[year].float(), out.age_low[year].float()

    def mae(tau: float) -> float:
        return float((point_estimate(torch.softmax(logits - tau * log_density, dim=-1), age_min, estimate)
                      - ages).abs().mean())

    limit = mae(0.0) + tolerance
    return max((float(t) for t in np.linspace(0.0, 1.0, 21) if mae(float(t)) <= limit), default=0.0)


# Regions of the estimate with a range of their own (RangeRule.starts): where ages are hardest to
# bound from one side (babies, children, teenagers, the old) each has one. On validation (docs/training.md)
# eight regions (1, 3, 6, 13, 20, 40, 60, 70) left Model A's FairFace 0-2 at 69.5 %; fourteen held every
# band for A but made its ranges 4-6 years wider and left B's UTKFace 1-2 at 90.7 %.
RANGE_REGIONS = (1.0, 2.0, 3.0, 6.0, 9.0, 13.0, 16.0, 20.0, 40.0, 60.0, 70.0)
# A region with fewer validation faces than this takes the levels of all faces together.
MIN_REGION_FACES = 30
# Breakdowns by true age (the data sets' spec), where a range must hold what it claims in every
# row: an age band of a set labelled in years, an age group of a set labelled in groups.
AGE_BREAKDOWNS = ("by_age_band", "by_age_group")
# Every band's coverage is aimed inside this, a little within the 70-90 % promised, as a margin for
# faces other than the validation ones.
BAND_AIM = (0.72, 0.88)
# The candidate percentiles of the band fit; how much a band's squared miss of BAND_AIM and a year of
# mean width weigh (a band 1 point outside costs as much as 10 years of width, 3 points as much as 90).
LOWER_LEVELS = tuple(float(v) for v in np.round(np.linspace(0.0, 0.6, 61), 3))
UPPER_LEVELS = tuple(float(v) for v in np.round(np.linspace(0.4, 0.99, 60), 3)) + (0.995, 0.9999)
MISS_COST = 100.0
WIDTH_COST = 1e-3
# An upper level of 1 would never be reached by a cdf that sums to 1 only up to rounding.
RANGE_UPPER_MAX = 0.9999


def fit_age_range(out: Outputs, age_min: int, coverage: float = 0.8, starts: tuple[float, ...] = RANGE_REGIONS,
                  sweeps: int = 8) -> RangeRule:
    """Percentile levels per region of the estimate whose ranges hold 70-90 % of true ages in every
    age band and group of every data set in `out`, and about `coverage` of each set overall.

    Two steps. First, split-conformal: per region, `lower` is the (1 - coverage) / 2 quantile of
    cdf(y) over its faces and `upper` the (1 + coverage) / 2 quantile of cdf(y - 1), so the range
    misses as often below as above there (a face of true age y is inside [low, high] when cdf(y) >=
    lower and cdf(y - 1) < upper). Regions are by estimate, which is all the app knows, so a true
    band spread over several regions (teenagers, the old, FairFace's 0-2) can still end outside
    70-90 %. Second, a few sweeps of coordinate descent move each region's pair on a grid to bring
    every band (`AGE_BREAKDOWNS`) inside BAND_AIM and each data set near `coverage`, at the least
    width. A face labelled with a group counts by the weight of its years inside the range
    (`year_weights`); each data set weighs alike.
    """
    logits = out.age_logits.float()
    probs = torch.softmax(logits, dim=-1)
    mean = probs @ age_bins(age_min, age_min + logits.shape[-1] - 1)
    weights = year_weights(out.age_low, out.age_high, age_min, logits.shape[-1])  # faces x years
    per_set = torch.bincount(out.dataset).float()
    fit_weights = weights / per_set[out.dataset, None]
    cdf = probs.cumsum(dim=-1)
    below = torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1]], dim=-1)  # cdf(y - 1)
    tail = (1 - coverage) / 2
    pooled = (_weighted_quantile(cdf, fit_weights, tail), _weighted_quantile(below, fit_weights, 1 - tail))
    region = RangeRule(starts=starts, lower=(0.0,) * len(starts), upper=(1.0,) * len(starts)).region(mean)
    chosen = []
    for k in range(len(starts)):
        mine = region == k
        lo, hi = pooled
        if int(mine.sum()) >= MIN_REGION_FACES:
            lo = _weighted_quantile(cdf[mine], fit_weights[mine], tail)
            hi = _weighted_quantile(below[mine], fit_weights[mine], 1 - tail)
        chosen.append((min(lo, hi), min(max(lo, hi), RANGE_UPPER_MAX)))
    chosen = _balance_bands(out, cdf, weights, region, chosen, coverage, sweeps)
    return RangeRule(starts=tuple(starts), lower=tuple(round(lo, 6) for lo, _ in chosen),
                     upper=tuple(round(hi, 6) for _, hi in chosen))


def _balance_bands(out: Outputs, cdf: torch.Tensor, weights: torch.Tensor, region: torch.Tensor,
                   chosen: list[tuple[float, float]], coverage: float, sweeps: int) -> list[tuple[float, float]]:
    """Coordinate descent of each region's (lower, upper) over the grids, from `chosen` (fit_age_range)."""
    lowers, uppers = torch.tensor(LOWER_LEVELS), torch.tensor(UPPER_LEVELS)
    # Rows: every age band or group of every data set, then every data set; a face's share of each row.
    rows, is_band = [], []
    for d in out.dataset.unique().tolist():
        mine = (out.dataset == d).numpy()
        for breakdown in spec.at(d).breakdowns:
            if breakdown.key in AGE_BREAKDOWNS:
                bands = [mask & mine for mask in breakdown.groups(out.age_low.numpy(), out.race.numpy()).values()]
                rows += [band for band in bands if band.any()]
        is_band += [True] * (len(rows) - len(is_band))
        rows.append(mine)
        is_band.append(False)
    is_band = torch.tensor(is_band)
    share = torch.from_numpy(np.stack(rows).astype(np.float32))
    share = share / share.sum(dim=1, keepdim=True)  # rows x faces
    cum = torch.cat([torch.zeros_like(weights[:, :1]), weights.cumsum(dim=-1)], dim=-1)  # weight of years < bin

    def tables(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For region k's faces, per (lower, upper) on the grids: rows' coverage sums and the mean width."""
        mine = region == k
        c = cdf[mine]
        low = torch.searchsorted(c, (lowers - 1e-6).expand(len(c), -1).contiguous())
        high = torch.searchsorted(c, (uppers - 1e-6).expand(len(c), -1).contiguous()).clamp(max=c.shape[1] - 1)
        w = cum[mine]
        covered = (w.gather(1, high + 1)[:, None, :] - w.gather(1, low)[:, :, None]).clamp(min=0)  # faces x L x U
        width = (high[:, None, :] - low[:, :, None]).float().clamp(min=0).sum(dim=0) / len(cdf)  # its share of the mean
        return torch.einsum("rf,flu->rlu", share[:, mine], covered), width

    per_region = [tables(k) for k in range(len(chosen))]
    at = [(int(torch.argmin((lowers - lo).abs())), int(torch.argmin((uppers - hi).abs()))) for lo, hi in chosen]
    thin = {k for k in range(len(chosen)) if int((region == k).sum()) < MIN_REGION_FACES}  # keep the pooled levels
    for _ in range(sweeps):
        for k, (sums, width) in enumerate(per_region):
            if k in thin:
                continue
            others = [j for j in range(len(at)) if j != k]
            rest = sum((per_region[j][0][:, at[j][0], at[j][1]] for j in others), torch.zeros(len(rows)))
            rest_width = sum(float(per_region[j][1][at[j]]) for j in others)
            cover = sums + rest[:, None, None]  # rows x L x U
            low_miss = (BAND_AIM[0] - cover).clamp(min=0) ** 2
            high_miss = (cover - BAND_AIM[1]).clamp(min=0) ** 2
            cost = MISS_COST * ((low_miss + high_miss) * is_band[:, None, None]).sum(dim=0)
            cost = cost + ((cover - coverage) ** 2 * ~is_band[:, None, None]).sum(dim=0)
            cost = cost + WIDTH_COST * (width + rest_width)
            cost = cost.masked_fill(lowers[:, None] > uppers[None, :], float("inf"))
            at[k] = divmod(int(torch.argmin(cost)), len(uppers))
    return [(float(lowers[a]), float(uppers[b])) for a, b in at]


def _weighted_quantile(values: torch.Tensor, weights: torch.Tensor, q: float) -> float:
    """The smallest v among `values` such that the weight of values below v is at most q of the total, and of
    values up to v more than q: the weighted q-quantile (values and weights of one shape)."""
    v, w = values.flatten(), weights.flatten()
    keep = w > 0
    v, w = v[keep], w[keep]
    order = torch.argsort(v)
    share = torch.cumsum(w[order], dim=0) / w.sum()
    at = int(torch.searchsorted(share, torch.tensor(q, dtype=share.dtype), right=True).clamp(max=len(v) - 1))
    return float(v[order][at])


def fit_gender_temperature(out: Outputs) -> float:
    """Temperature scaling of the gender logit by negative log-likelihood."""
    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 121))
    y = out.gender.float()
    def nll(t: float) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(out.gender_logit / t, y))
    return float(min(grid, key=nll))


def dataset_metrics(out: Outputs, dataset: DatasetSpec, age_min: int, rule: AgeRangeRule = DEFAULT_RANGE,
                    gender_temperature: float = 1.0, unsure_below: float = 0.5) -> dict[str, float]:
    """The metrics of faces of one data set, as its kind of age label allows."""
    if dataset.age_kind == YEAR:
        return year_metrics(out, age_min, rule, gender_temperature, unsure_below)
    return group_metrics(out, dataset, age_min, rule, gender_temperature, unsure_below)


def split_metrics(out: Outputs, age_min: int, rule: AgeRangeRule = DEFAULT_RANGE,
                  gender_temperature: float = 1.0, unsure_below: float = 0.5) -> dict[str, dict[str, float]]:
    """Per data set present in `out`, by name: its `dataset_metrics`."""
    metrics = {}
    for d, name in enumerate(spec.names()):
        mask = out.dataset == d
        if mask.any():
            metrics[name] = dataset_metrics(out.subset(mask), spec.at(d), age_min, rule, gender_temperature,
                                            unsure_below)
    return metrics
