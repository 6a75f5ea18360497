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
from demo.heads import decode_age, gender_probability, range_of
from training.data import spec
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
                    flip: bool = False) -> Outputs:
    """Run `model` over a loader of FaceDataset batches; with `flip`, average with the mirror image."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FIELDS}
    for x, *labels in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cuda = device.startswith("cuda")
        half = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16  # older GPUs: fp16
        with torch.autocast("cuda", dtype=half, enabled=cuda):
            age_logits, gender_logit = forward_with_flip(model, x) if flip else model(x)
        parts["age_logits"].append(age_logits.float().cpu())
        parts["gender_logit"].append(gender_logit.float().cpu())
        for key, value in zip(FIELDS[2:], labels):
            parts[key].append(value)
    return Outputs(**{k: torch.cat(v) for k, v in parts.items()})


def cpu_ms_per_face(model: nn.Module, input_size: int, runs: int = 30, warmup: int = 5, flip: bool = False) -> float:
    """Median CPU milliseconds for one face (a batch of one; two with `flip`) through `model`, after warm-up.

    Model and input in channels_last, as `demo.checkpoint.LoadedModel` serves them.
    """
    model = model.to("cpu", memory_format=torch.channels_last).eval()
    x = torch.randn(1, 3, input_size, input_size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            forward_with_flip(model, x) if flip else model(x)
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


def range_coverage(low: torch.Tensor, high: torch.Tensor, age_low: torch.Tensor,
                   age_high: torch.Tensor) -> torch.Tensor:
    """Per face, the share of its label's years inside the predicted range [low, high] (years).

    1 or 0 for an age in years; for a group, the fraction of its years the range covers (the
    true age taken as equally likely anywhere in the group).
    """
    overlap = (torch.minimum(high, age_high.float()) - torch.maximum(low, age_low.float()) + 1).clamp(min=0)
    return overlap / (age_high - age_low + 1).float()


def year_metrics(out: Outputs, age_min: int, age_temperature: float = 1.0, gender_temperature: float = 1.0,
                 level: float = 0.8) -> dict[str, float]:
    """Age in years (MAE, CS@5, range coverage and width) and gender metrics over the faces in `out`."""
    est = decode_age(out.age_logits, age_min, age_temperature, level)
    err = (est.mean - out.age.float()).abs()
    inside = (out.age >= est.low) & (out.age <= est.high)
    old = out.age >= OLD_AGE
    return {
        "n": int(len(err)),
        "age_mae": float(err.mean()),
        "age_mae_60_plus": float(err[old].mean()) if old.any() else math.nan,
        "age_cs5": float((err <= 5).float().mean()),
        "age_range_coverage": float(inside.float().mean()),
        "age_range_width": float((est.high - est.low).mean()),
        **gender_metrics(out, gender_temperature),
    }


def group_metrics(out: Outputs, dataset: DatasetSpec, age_min: int, age_temperature: float = 1.0,
                  gender_temperature: float = 1.0, level: float = 0.8) -> dict[str, float]:
    """Age-group labels: the data set's group the estimate falls in, exact and within one, and gender."""
    est = decode_age(out.age_logits, age_min, age_temperature, level)
    predicted = torch.tensor([dataset.group_of(a) for a in est.mean.tolist()])
    true = torch.tensor([dataset.group_of(a) for a in out.age_low.tolist()])
    off = (predicted - true).abs()
    return {
        "n": int(len(off)),
        "age_group_exact": float((off == 0).float().mean()),
        "age_group_within_one": float((off <= 1).float().mean()),
        "age_range_coverage": float(range_coverage(est.low, est.high, out.age_low, out.age_high).mean()),
        **gender_metrics(out, gender_temperature),
    }


def gender_metrics(out: Outputs, gender_temperature: float = 1.0) -> dict[str, float]:
    p = gender_probability(out.gender_logit, gender_temperature).numpy()
    y = out.gender.numpy()
    eps = 1e-7
    return {
        "gender_accuracy": float(((p >= 0.5) == (y == 1)).mean()),
        "gender_ece": expected_calibration_error(p, y),
        "gender_nll": float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))),
    }


def fit_age_adjustment(out: Outputs, age_min: int, log_density: torch.Tensor, tolerance: float) -> float:
    """The strength tau of post-hoc logit adjustment, `logits - tau * log_density`, for `out`.

    A model trained on imbalanced ages answers with their prior folded in, pulling rare (old)
    faces towards common ages; subtracting tau times the log of the training faces' age density
    takes part of that prior back out (Menon et al., "Long-tail learning via logit adjustment",
    2021). tau = 1 undoes it all, which costs accuracy on the common ages: the tau chosen is the
    largest on a grid over 0..1 whose MAE on the year-labelled faces of `out` is at most
    `tolerance` years above tau = 0's (0 when `out` has no such faces).
    """
    year = out.age_low == out.age_high
    if not year.any() or tolerance <= 0:
        return 0.0
    logits, ages = out.age_logits[year].float(), out.age_low[year].float()

    def mae(tau: float) -> float:
        return float((decode_age(logits - tau * log_density, age_min).mean - ages).abs().mean())

    limit = mae(0.0) + tolerance
    return max((float(t) for t in np.linspace(0.0, 1.0, 21) if mae(float(t)) <= limit), default=0.0)


def fit_age_range(out: Outputs, age_min: int, coverage: float = 0.8, slack: float = 0.01) -> tuple[float, float]:
    """The (temperature, level) whose ranges hold `coverage` of true ages on every data set in `out`.

    Faces labelled with a group count by the share of the group the range covers. One pair
    serves every face (the app does not know where a photo comes from), so what counts is the data
    set served worst: a range fitted on all faces pooled came out too wide on UTKFace's years and
    too narrow on FairFace's groups. The two knobs act differently (the temperature reshapes the
    distribution, the level cuts its tails), and many pairs come about as near: of those whose worst
    set is within `slack` of the nearest achievable, the one with the narrowest ranges is taken (a
    range should be honest first, then as informative as it can be). A grid over both is enough;
    the estimate does not depend on them.
    """
    sets = [out.subset(out.dataset == d) for d in out.dataset.unique().tolist()]
    scored = []  # (worst deviation, mean width, temperature, level)
    for t in np.exp(np.linspace(np.log(0.5), np.log(8.0), 49)):
        probs = [torch.softmax(o.age_logits.float() / float(t), dim=-1) for o in sets]
        for level in np.linspace(0.5, 0.98, 49):
            ranges = [range_of(p, float(level)) for p in probs]
            covered = [_covered(low, high, o, age_min) for (low, high), o in zip(ranges, sets)]
            width = float(np.mean([float((high - low).float().mean()) for low, high in ranges]))
            scored.append((max(abs(c - coverage) for c in covered), width, float(t), float(level)))
    nearest = min(worst for worst, *_ in scored)
    _, _, t, level = min((s for s in scored if s[0] <= nearest + slack), key=lambda s: s[1])
    return t, level


def _covered(low: torch.Tensor, high: torch.Tensor, out: Outputs, age_min: int) -> float:
    """range_coverage of bin-index ranges (range_of), averaged over the faces of `out`."""
    return float(range_coverage((low + age_min).float(), (high + age_min).float(), out.age_low, out.age_high).mean())


def fit_gender_temperature(out: Outputs) -> float:
    """Temperature scaling of the gender logit by negative log-likelihood."""
    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 121))
    y = out.gender.float()
    def nll(t: float) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(out.gender_logit / t, y))
    return float(min(grid, key=nll))


def dataset_metrics(out: Outputs, dataset: DatasetSpec, age_min: int, age_temperature: float = 1.0,
                    gender_temperature: float = 1.0, level: float = 0.8) -> dict[str, float]:
    """The metrics of faces of one data set, as its kind of age label allows."""
    if dataset.age_kind == YEAR:
        return year_metrics(out, age_min, age_temperature, gender_temperature, level)
    return group_metrics(out, dataset, age_min, age_temperature, gender_temperature, level)


def split_metrics(out: Outputs, age_min: int, age_temperature: float = 1.0, gender_temperature: float = 1.0,
                  level: float = 0.8) -> dict[str, dict[str, float]]:
    """Per data set present in `out`, by name: its `dataset_metrics`."""
    metrics = {}
    for d, name in enumerate(spec.names()):
        mask = out.dataset == d
        if mask.any():
            metrics[name] = dataset_metrics(out.subset(mask), spec.at(d), age_min, age_temperature,
                                            gender_temperature, level)
    return metrics
