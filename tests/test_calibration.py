"""The age range's calibration: one (temperature, level) pair that holds 80 % on each data set."""

import torch

from training.evaluation.metrics import Outputs, fit_age_range, split_metrics

AGES = torch.arange(1, 117, dtype=torch.float32)


def outputs(n: int, dataset: int, spread: float, scatter, seed: int, groups: bool = False) -> Outputs:
    """Faces whose predicted distribution is a Gaussian of `spread` years around a guess, the true
    age `scatter`ed around that guess (the range must be wider or narrower than predicted), labelled
    with the year or (`groups`) with its decade, 30-39 and so on."""
    g = torch.Generator().manual_seed(seed)
    guess = 20 + 50 * torch.rand(n, generator=g)
    age = (guess + scatter(n, g)).round().clamp(10, 109).long()
    low, high = (age // 10 * 10, age // 10 * 10 + 9) if groups else (age, age)
    logits = -0.5 * ((AGES[None, :] - guess[:, None]) / spread) ** 2
    zeros = torch.zeros(n, dtype=torch.long)
    return Outputs(logits, torch.zeros(n), low, high, zeros, zeros, torch.full((n,), dataset))


def gaussian(sd):
    return lambda n, g: sd * torch.randn(n, generator=g)


def laplace(scale):
    return lambda n, g: scale * torch.distributions.Laplace(0, 1).icdf(torch.rand(n, generator=g) * 0.998 + 0.001)


def joined(*parts: Outputs) -> Outputs:
    return Outputs(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def coverages(out: Outputs, temperature: float, level: float) -> list[float]:
    return [m["age_range_coverage"] for m in split_metrics(out, 1, temperature, 1.0, level).values()]


def test_one_set_gets_its_stated_coverage():
    out = outputs(1500, 0, spread=4.0, scatter=gaussian(7.0), seed=0)  # the model is over-confident
    temperature, level = fit_age_range(out, 1)
    assert abs(coverages(out, temperature, level)[0] - 0.8) < 0.01


def test_years_and_groups_are_both_as_near_80_as_one_range_allows():
    # As with UTKFace and FairFace: one set labelled in years, the other in decades, which a range
    # covers only in part; a temperature fitted on both pooled leaves one too wide, the other too narrow.
    out = joined(outputs(1500, 0, 5.0, gaussian(6.0), seed=1), outputs(1500, 1, 5.0, laplace(6.0), seed=2, groups=True))
    temperature, level = fit_age_range(out, 1)
    fitted = coverages(out, temperature, level)
    pooled = pooled_temperature_fit(out)  # how the range was fitted before: one temperature, level 0.8
    # Here (Gaussian predictions) both knobs only set the width, so the two sets stay ~15 points
    # apart whatever the pair: the worse set ends no further from 80 % than the pooled fit leaves it,
    # give or take the fit's slack (0.01) for narrower ranges, and the sets straddle 80 %.
    assert max(abs(c - 0.8) for c in fitted) <= max(abs(c - 0.8) for c in pooled) + 0.01
    assert fitted[0] > 0.8 > fitted[1]
    # The estimate is untouched by the pair (the mean of the untempered distribution).
    assert split_metrics(out, 1, temperature, 1.0, level)["utkface"]["age_mae"] == split_metrics(out, 1)["utkface"][
        "age_mae"]


def pooled_temperature_fit(out: Outputs) -> list[float]:
    pooled = {t: sum(c * n for c, n in zip(coverages(out, t, 0.8), (1500, 1500))) / 3000
              for t in torch.linspace(0.5, 4.0, 36).tolist()}
    return coverages(out, min(pooled, key=lambda t: abs(pooled[t] - 0.8)), 0.8)


def test_logit_adjustment_takes_back_a_prior_as_far_as_the_tolerance_allows():
    from training.evaluation.metrics import fit_age_adjustment

    g = torch.Generator().manual_seed(3)
    # Training ages mostly near 30; the faces to answer are of every age. A model that folds the
    # prior into its answers pulls old faces towards 30; one that does not, answers them as seen.
    prior = torch.exp(-0.5 * ((AGES - 30) / 12) ** 2) + 0.01
    log_prior = prior.log() - prior.log().mean()
    age = (10 + 70 * torch.rand(2000, generator=g)).round()
    seen = -0.5 * ((AGES[None, :] - (age + 4 * torch.randn(2000, generator=g))[:, None]) / 5) ** 2
    zeros = torch.zeros(2000, dtype=torch.long)

    def out(logits):
        return Outputs(logits, torch.zeros(2000), age.long(), age.long(), zeros, zeros, zeros)

    folded = fit_age_adjustment(out(seen + log_prior), 1, log_prior, tolerance=0.05)
    assert folded == 1.0  # taking all of the prior back out makes every answer better
    plain = fit_age_adjustment(out(seen), 1, log_prior, tolerance=0.05)
    assert plain < 0.5  # here it only costs: as much as 0.05 years allows
    mae = [split_metrics(out(seen - t * log_prior), 1)["utkface"]["age_mae"] for t in (0.0, plain)]
    assert mae[1] <= mae[0] + 0.05
    assert fit_age_adjustment(out(seen), 1, log_prior, tolerance=0.0) == 0.0
