"""The spread rule's fit: normalised conformal multiples by estimate, checked on faces it was not fitted on."""

import pytest
import torch

from demo.heads import SpreadRule, decode_age
from tests.test_calibration import AGES, biased, joined, laplace, outputs
from training.evaluation.metrics import Outputs, split_metrics
from training.evaluation.ranges import (
    bands_outside,
    cross_fitted,
    fit_global_spread,
    fit_spread_rule,
    range_table,
)


def thinned(out: Outputs, mask: torch.Tensor, keep: int, seed: int) -> Outputs:
    """`out` with only `keep` of the faces in `mask` (at random), as rare as a real validation set's bands."""
    g = torch.Generator().manual_seed(seed)
    rare = torch.nonzero(mask).flatten()
    dropped = rare[torch.randperm(len(rare), generator=g)[keep:]]
    kept = torch.ones(len(mask), dtype=torch.bool)
    kept[dropped] = False
    return out.subset(kept)


def table_of(out: Outputs, rule: SpreadRule) -> dict:
    est = decode_age(out.age_logits, 1, rule)
    return range_table(out, est.low, est.high, 1)["utkface"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_on_real_band_sizes_recovers_its_coverage_on_fresh_faces(seed):
    # A validation set of 2,000 faces whose 70+ band has 50 (FairFace's "more than 70" has about as many),
    # answered as a model trained on imbalanced ages does (the old pulled towards the middle); checked on
    # 20,000 faces it was not fitted on.
    val = biased(2000, seed=10 + seed)
    val = thinned(val, val.age >= 70, keep=50, seed=seed)
    rule = fit_spread_rule(val, 1)
    fresh = table_of(biased(20000, seed=100 + seed), rule)
    assert abs(fresh["all"]["coverage"] - 0.8) < 0.03
    # Every band near its aim; the 70+ faces, 50 in the fit and their estimates pulled down, hold 69-77 %.
    assert bands_outside({"utkface": fresh}, aim=(0.65, 0.9)) == []
    assert fresh["all"]["wide_share"] == 0.0  # the widest spread here is 10.5 years: no 40-year range


def test_a_fit_around_the_median_recovers_its_coverage_and_holds_the_median():
    val, fresh = biased(2000, seed=20), biased(20000, seed=120)
    rule = fit_spread_rule(val, 1, estimate="median")
    assert rule.estimate == "median"
    table = table_of(fresh, rule)
    assert abs(table["all"]["coverage"] - 0.8) < 0.03
    est = decode_age(fresh.age_logits, 1, rule)
    assert bool(((est.low <= est.years.round()) & (est.years.round() <= est.high)).all())


def test_cross_fitting_measures_what_fresh_faces_show():
    # Each face's range fitted on the other half: its coverage is a measurement, near fresh faces'.
    val = biased(3000, seed=7)
    low, high = cross_fitted(val, 1, lambda faces: fit_spread_rule(faces, 1))
    measured = range_table(val, low, high, 1)["utkface"]
    fresh = table_of(biased(20000, seed=8), fit_spread_rule(val, 1))
    assert abs(measured["all"]["coverage"] - fresh["all"]["coverage"]) < 0.03
    for band in ("1-2", "20-29", "70+"):
        assert abs(measured[band]["coverage"] - fresh[band]["coverage"]) < 0.08


def test_the_range_follows_each_faces_own_spread():
    # Two faces answered 40, one sure (spread 2 years) and one unsure (spread 8): their ranges' widths
    # are in the same ratio, whatever the multiples.
    logits = -0.5 * ((AGES[None, :] - 40.0) / torch.tensor([[2.0], [8.0]])) ** 2
    est = decode_age(logits, 1, SpreadRule(below=(1.1,), above=(1.5,)))
    widths = (est.high - est.low).tolist()
    assert widths[0] == pytest.approx(2 * 2.6, abs=1) and widths[1] == pytest.approx(8 * 2.6, abs=1)


def test_balancing_by_band_serves_the_rare_old_faces():
    # With faces weighed alike, the few old faces (their estimates pulled down) barely move the multiples
    # of the estimates they get; weighed by band, they pull as hard as any band.
    val = biased(6000, seed=4)
    val = thinned(val, val.age >= 70, keep=60, seed=0)
    fresh = biased(20000, seed=5)
    by_face, by_band = (table_of(fresh, fit_spread_rule(val, 1, balance=b))["70+"]["coverage"]
                        for b in ("faces", "bands"))
    assert by_band > by_face + 0.03


def test_years_and_groups_share_one_rule():
    # One set labelled in years, one in decades (a range covers a decade only in part).
    out = joined(outputs(1500, 0, 5.0, laplace(5.0), seed=1), outputs(1500, 1, 5.0, laplace(6.0), seed=2, groups=True))
    # Faces weighed alike pool the two sets at 80 %: the decades a little under, the years over.
    by_face = fit_spread_rule(out, 1, balance="faces")
    coverage = [m["age_range_coverage"] for m in split_metrics(out, 1, by_face).values()]
    assert abs(sum(coverage) / 2 - 0.8) < 0.02 and coverage[0] > 0.8 > coverage[1] > 0.7
    # Weighed by band, the decades' bands pull as hard as the years': both sets inside 70-90 %.
    coverage = [m["age_range_coverage"] for m in split_metrics(out, 1, fit_spread_rule(out, 1)).values()]
    assert all(0.75 < c < 0.9 for c in coverage)


def test_one_pair_of_multiples_is_the_two_parameter_alternative():
    rule = fit_global_spread(biased(3000, seed=3), 1)
    assert len(rule.knots) == 1 and rule.below[0] > 0 and rule.above[0] > 0


def test_moving_the_multiples_to_the_bands_fits_the_faces_it_is_fitted_on():
    # The alternative measured in docs/training.md: every band inside 72-88 % on the faces it is fitted on,
    # at the least width; on fresh faces it holds less than the conformal multiples (the fit's own faces
    # flatter it), which is why it is not the shipped rule.
    val = biased(3000, seed=4)
    conformal, balanced = fit_spread_rule(val, 1), fit_spread_rule(val, 1, sweeps=4)
    assert balanced.knots == conformal.knots and balanced != conformal
    assert bands_outside({"utkface": table_of(val, balanced)}, aim=(0.72, 0.88)) == []
    fresh = biased(20000, seed=5)
    assert table_of(fresh, balanced)["all"]["coverage"] < table_of(fresh, conformal)["all"]["coverage"]


def sure_and_unsure(n: int, seed: int) -> Outputs:
    """Faces answered 40 with spreads of 2 to 8 years, whose true ages scatter as the square of the spread
    grows (sd spread^2 / 6: 0.7 to 10.7 years), as a model's do when its unsure faces are worse than it says."""
    g = torch.Generator().manual_seed(seed)
    spread = 2 + 6 * torch.rand(n, generator=g)
    age = (40 + spread**2 / 6 * torch.randn(n, generator=g)).round().long()
    logits = -0.5 * ((AGES[None, :] - 40.0) / spread[:, None]) ** 2
    zeros = torch.zeros(n, dtype=torch.long)
    return Outputs(logits, torch.zeros(n), age, age, zeros, zeros, zeros)


def test_a_power_of_the_spread_serves_sure_and_unsure_faces_alike():
    # With the spread as it is, one multiple cannot serve both: the sure faces' ranges hold too much and
    # the unsure faces' too little. Squared, as their errors grow, both thirds hold about 80 % on fresh faces.
    # (Faces weighed alike: weighed by band, the few far-off ages of the unsure faces would widen every range.)
    val, fresh = sure_and_unsure(4000, seed=1), sure_and_unsure(20000, seed=2)
    spread = (fresh.age_logits.softmax(dim=-1) @ (AGES - 40.0) ** 2).sqrt()
    for power, holds in ((1.0, False), (2.0, True)):
        rule = fit_spread_rule(val, 1, balance="faces", power=power)
        assert rule.power == power
        est = decode_age(fresh.age_logits, 1, rule)
        inside = ((fresh.age >= est.low) & (fresh.age <= est.high)).float()
        sure, unsure = float(inside[spread < 4].mean()), float(inside[spread > 6].mean())
        assert (0.72 < sure < 0.88 and 0.72 < unsure < 0.88) is holds, (power, sure, unsure)
        if not holds:
            assert sure > 0.9 and unsure < 0.75


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_belt_holds_every_true_age_band_on_fresh_faces(seed):
    # Read at the true ages, the multiples follow the model's regression to the mean: the 70+ faces, their
    # estimates pulled down and 50 of them in the fit, are held on fresh faces as well as every other band,
    # where the multiples read at the estimate hold them less (69-74 % on these seeds).
    val = biased(2000, seed=10 + seed)
    val = thinned(val, val.age >= 70, keep=50, seed=seed)
    fresh = biased(20000, seed=100 + seed)
    belt = fit_spread_rule(val, 1, multiples_at="age")
    assert belt.multiples_at == "age"
    table = table_of(fresh, belt)
    assert abs(table["all"]["coverage"] - 0.8) < 0.03
    assert bands_outside({"utkface": table}, aim=(0.72, 0.9)) == []
    assert table["70+"]["coverage"] > table_of(fresh, fit_spread_rule(val, 1))["70+"]["coverage"] + 0.03
    est = decode_age(fresh.age_logits, 1, belt)
    shown = est.years.round()
    assert bool(((est.low <= shown) & (shown <= est.high)).all())
    assert float((est.high - est.low).max()) <= 39


def test_the_belts_range_is_the_years_whose_estimates_it_holds():
    # Multiples 1 below and 2 above at every age (one knot): year y is inside when the estimate m lies in its
    # band [y - 2 s, y + s], that is when y lies in [m - s, m + 2 s]: with constant multiples, the estimate
    # rule's range.
    logits = -0.5 * ((AGES - 40.0) / 5.0) ** 2  # answered 40, spread 5 years
    belt = SpreadRule(below=(1.0,), above=(2.0,), multiples_at="age")
    est = decode_age(logits[None], 1, belt)
    assert (est.low.item(), est.high.item()) == (35, 50)
    # An `above` multiple growing with age (1 at 40, 3 at 60: estimates as far as 3 spreads under 60 still belong to
    # 60-year-olds, as a model answering the old younger gives) reaches further up: year y is inside while
    # y - 1/2 <= 40 + (1 + (y - 40) / 20 * 2) * 5, up to 51; the side below is unchanged.
    rising = SpreadRule(knots=(1.0, 40.0, 60.0), below=(1.0, 1.0, 1.0), above=(1.0, 1.0, 3.0), multiples_at="age")
    est = decode_age(logits[None], 1, rising)
    assert (est.low.item(), est.high.item()) == (35, 51)


def test_misses_a_side_cannot_make_go_to_the_other():
    # A true age of 1 never lies above a range (every estimate is at least 1): were each side to miss 10 %, the
    # 1-2 band would hold 90 % or more. The side below takes the other's share, and the band holds near 80 %.
    table = table_of(biased(20000, seed=130), fit_spread_rule(biased(4000, seed=30), 1, multiples_at="age"))
    assert 0.74 < table["1-2"]["coverage"] < 0.86


def test_the_rules_report_measures_every_rule_cross_fitted_around_the_age_shown():
    from tools.range_rules import RULES, compare, markdown

    val = biased(3000, seed=41)
    results = compare(val, 1, "median")
    assert set(results) == set(RULES)
    for name, result in results.items():
        measured = result["cross_fitted"]["sets"]["utkface"]
        assert measured["n"] == 3000 and 0.7 < measured["coverage"] < 0.9, name
    # Measured on faces it was not fitted on, the belt holds the pulled-down old faces as well as the rest.
    belt = results["belt, knots added at 13 and 18 (9 knots; shipped)"]
    assert belt["cross_fitted"]["outside_70_90"] == []
    # Its coverage by estimate is reported beside it: every face in one region, the regions' faces all of them.
    assert sum(region["n"] for region in belt["by_estimate"].values()) == 3000
    assert all(0.5 < region["coverage"] <= 1 for region in belt["by_estimate"].values())
    table = markdown({"synthetic": results})
    assert all(f"| synthetic | {name} |" in table for name in RULES)
    # Each spread rule is fitted around the age the model shows (round five's percentiles read the mean).
    fitted = {name: fit(val, 1, "median") for name, fit in RULES.items()}
    assert all(rule.estimate == "median" for rule in fitted.values() if isinstance(rule, SpreadRule))
