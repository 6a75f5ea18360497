"""The age range's calibration: percentiles per region of the estimate that hold 80 % in every age band."""

import pytest
import torch

from demo.heads import RangeRule, decode_age
from training.data.spec import AGE_BANDS, band_name
from training.evaluation.metrics import Outputs, fit_age_range, range_coverage, split_metrics

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


def coverages(out: Outputs, rule: RangeRule) -> list[float]:
    return [m["age_range_coverage"] for m in split_metrics(out, 1, rule).values()]


def test_one_set_gets_its_stated_coverage():
    out = outputs(1500, 0, spread=4.0, scatter=gaussian(7.0), seed=0)  # the model is over-confident
    rule = fit_age_range(out, 1)
    assert abs(coverages(out, rule)[0] - 0.8) < 0.02
    assert abs(coverages(out, RangeRule.central(0.8))[0] - 0.8) > 0.2  # as predicted, far too narrow


def biased(n: int, seed: int) -> Outputs:
    """Faces of every age, 1 to 95, answered as a model trained on imbalanced ages does: babies a year
    too old, the old pulled towards the middle, each a Gaussian around its guess as wide as errors grow
    with age (a year for a baby, 10 at 90), cut at age 1 (the head has no younger bin), and the truth
    scattered around the guess as widely."""
    g = torch.Generator().manual_seed(seed)
    age = torch.cat([torch.randint(1, 6, (n // 4,), generator=g), torch.randint(6, 96, (n - n // 4,), generator=g)])
    spread = 1.0 + 0.1 * age.float()
    guess = age + 1.0 * (age < 3) - 0.25 * (age - 45).clamp(min=0) + spread * torch.randn(len(age), generator=g)
    logits = -0.5 * ((AGES[None, :] - guess[:, None]) / spread[:, None]) ** 2
    zeros = torch.zeros(len(age), dtype=torch.long)
    return Outputs(logits, torch.zeros(len(age)), age, age, zeros, zeros, zeros)


@pytest.mark.parametrize("band", AGE_BANDS, ids=band_name)
def test_every_age_band_gets_70_to_90_percent(band):
    fitted_on, checked = biased(6000, seed=4), biased(6000, seed=5)  # fit on validation, check on other faces
    rule = fit_age_range(fitted_on, 1)
    est = decode_age(checked.age_logits, 1, rule)
    inside = (checked.age >= est.low) & (checked.age <= est.high)
    in_band = (checked.age >= band[0]) & (checked.age <= band[1])
    assert 0.7 <= float(inside[in_band].float().mean()) <= 0.9
    assert abs(float(inside.float().mean()) - 0.8) < 0.03


def test_one_central_range_misses_the_old():
    # What the fit per region is for: the central part of the same answers, at one level, widened until
    # it holds 80 % overall, leaves the old out (their estimates are pulled down, the range with them).
    checked = biased(6000, seed=5)
    level = next(lv for lv in torch.linspace(0.8, 0.999, 200).tolist()
                 if coverages(checked, RangeRule.central(lv))[0] >= 0.8)
    est = decode_age(checked.age_logits, 1, RangeRule.central(level))
    inside = (checked.age >= est.low) & (checked.age <= est.high)
    assert float(inside[checked.age >= 70].float().mean()) < 0.7


def test_years_and_groups_are_both_near_80():
    # As with UTKFace and FairFace: one set labelled in years, the other in decades, which a range
    # covers only in part; one rule serves both.
    out = joined(outputs(1500, 0, 5.0, gaussian(6.0), seed=1), outputs(1500, 1, 5.0, laplace(6.0), seed=2, groups=True))
    rule = fit_age_range(out, 1)
    # Partly covered decades count for less than whole years: the two straddle 80 %.
    fitted = coverages(out, rule)
    assert fitted[0] > 0.8 > fitted[1] and abs(sum(fitted) / 2 - 0.8) < 0.02 and min(fitted) > 0.7
    # The estimate is untouched by the rule (the mean of the untempered distribution).
    assert split_metrics(out, 1, rule)["utkface"]["age_mae"] == split_metrics(out, 1)["utkface"]["age_mae"]


def test_the_open_group_at_the_top_is_covered_as_old_ages_are_spread():
    from training.data.ages import old_age_prior, year_weights

    prior = old_age_prior()
    assert prior.sum().item() == pytest.approx(1.0) and prior[:20].sum() > 0.85  # mostly 70-89
    low, high = torch.tensor([70, 30, 40]), torch.tensor([116, 39, 40])
    weights = year_weights(low, high, 1, 116)
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert torch.equal(weights[0, 69:], prior) and torch.allclose(weights[1, 29:39], torch.full((10,), 0.1))
    assert weights[2, 39] == 1.0
    covered = range_coverage(torch.tensor([70.0, 30.0, 41.0]), torch.tensor([84.0, 34.0, 50.0]), low, high, 1, 116)
    assert covered[0].item() == pytest.approx(prior[:15].sum().item()) and covered[0] > 0.6  # evenly: 15 / 47
    assert covered[1:].tolist() == pytest.approx([0.5, 0.0])


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
