import math

import pytest
import torch

from demo.heads import RangeRule, SpreadRule, decode_age, gender_call, gender_probability, point_estimate
from training.fit.losses import LossWeights, age_loss, gender_loss, multitask_loss, soft_age_targets


def test_soft_targets_by_hand():
    # bins 1, 2, 3; age 2, sigma 1: weights e^-0.5, 1, e^-0.5
    t = soft_age_targets(torch.tensor([2]), age_min=1, num_bins=3, sigma=1.0)
    w = math.exp(-0.5)
    assert torch.allclose(t, torch.tensor([[w, 1, w]]) / (1 + 2 * w))


def test_age_loss_by_hand():
    # Uniform logits over bins 1, 2, 3: CE = ln 3 whatever the targets; expected age 2.
    logits = torch.zeros(1, 3)
    loss = age_loss(logits, torch.tensor([3]), age_min=1, sigma=1.0, l1_weight=0.5)
    assert loss.item() == pytest.approx(math.log(3) + 0.5 * 1.0)


def test_gender_loss_by_hand():
    assert gender_loss(torch.tensor([0.0]), torch.tensor([1])).item() == pytest.approx(math.log(2))
    # logit 2 for a female face: -log(sigmoid(2)) = log(1 + e^-2)
    assert gender_loss(torch.tensor([2.0]), torch.tensor([1])).item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_multitask_weights_and_single_task():
    logits, gender = torch.zeros(2, 3), torch.zeros(2)
    ages, genders = torch.tensor([2, 2]), torch.tensor([0, 1])
    age_part = age_loss(logits, ages, 1)
    total, parts = multitask_loss(logits, gender, ages, ages, genders, 1, LossWeights(age=2.0, gender=0.5))
    assert total.item() == pytest.approx(2.0 * age_part.item() + 0.5 * math.log(2))
    only_gender, parts = multitask_loss(logits, gender, ages, ages, genders, 1, LossWeights(age=0.0))
    assert only_gender.item() == pytest.approx(math.log(2)) and "age_loss" not in parts


def test_decode_age_mean_and_range_by_hand():
    # P over ages 10..14 = .1 .1 .6 .1 .1: mean 12; cdf .1 .2 .8 .9 1.0 -> 10th pct 10, 90th pct 13
    probs = torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.1]])
    est = decode_age(probs.log(), age_min=10, rule=RangeRule.central(0.8))
    assert est.years.item() == pytest.approx(12.0)
    assert (est.low.item(), est.high.item()) == (10, 13)
    # A 50 % range: 25th pct reaches at age 12 (cdf .8), 75th pct at 12 too.
    est = decode_age(probs.log(), age_min=10, rule=RangeRule.central(0.5))
    assert (est.low.item(), est.high.item()) == (12, 12)


def test_the_median_by_hand_and_beside_the_mean():
    # P over ages 10..14 = .1 .1 .6 .1 .1: the mass before 12 is .2, so the median lies .3 / .6 into 12's bin
    # [11.5, 12.5]: 11.5 + .5 = 12, as the mean; even over 10..13 it is where 11's bin ends, 11.5.
    probs = torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25, 0.0]])
    assert point_estimate(probs, 10, "median").tolist() == pytest.approx([12.0, 11.5])
    assert point_estimate(torch.tensor([[0.0, 1.0, 0.0]]), 10, "median").item() == pytest.approx(11.0)  # one year
    # Skewed away from a bound (a baby's distribution), the median lies below the mean; it moves smoothly.
    skewed = torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]])
    median, mean = point_estimate(skewed, 1, "median").item(), point_estimate(skewed, 1, "mean").item()
    assert median == pytest.approx(1.5 + 0.1 / 0.3) and median < mean == pytest.approx(2.1)
    nudged = torch.tensor([[0.39, 0.31, 0.15, 0.1, 0.05]])
    assert 0 < abs(median - point_estimate(nudged, 1, "median").item()) < 0.05
    with pytest.raises(ValueError, match="estimate must be"):
        point_estimate(probs, 10, "mode")


def test_a_median_rule_shows_the_median_inside_its_range():
    ages = torch.arange(1, 117, dtype=torch.float32)
    logits = -(((ages[None, :] - torch.tensor([[1.0], [40.0], [90.0]])) / torch.tensor([[3.0], [6.0], [25.0]])) ** 2)
    rule = SpreadRule(below=(1.0,), above=(1.0,), estimate="median")
    est = decode_age(logits, 1, rule)
    assert torch.allclose(est.years, point_estimate(torch.softmax(logits, -1), 1, "median"))
    assert not torch.allclose(est.years, decode_age(logits, 1).years, atol=0.1)  # not the mean
    assert bool(((est.low <= est.years.round()) & (est.years.round() <= est.high)).all())
    with pytest.raises(ValueError, match="estimate must be"):
        SpreadRule(estimate="mode")


def test_a_range_rule_reads_each_region_of_the_estimate_at_its_own_percentiles():
    # The same distribution (cdf .1 .2 .8 .9 1.0 over 10..14, mean 12) read by two regions' rules:
    # estimates from 12 on take the 5th to 95th percentile (10 to 14), below 12 the 30th to 70th (12 to 12).
    probs = torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.1]] * 2)
    rule = RangeRule(starts=(1.0, 12.0), lower=(0.3, 0.05), upper=(0.7, 0.95))
    low, high = rule.read(probs, torch.tensor([11.9, 12.0]), age_min=10)
    assert low.tolist() == [12, 10] and high.tolist() == [12, 14]
    with pytest.raises(ValueError, match="lower <= upper"):
        RangeRule(lower=(0.9,), upper=(0.1,))


def test_a_spread_rule_by_hand():
    # P over ages 10..14 = .1 .1 .6 .1 .1: mean 12, variance .1*4 + .1*1 + .1*1 + .1*4 = 1, spread 1.
    probs = torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.1]])
    low, high = SpreadRule(below=(1.2,), above=(2.0,)).read(probs, torch.tensor([12.0]), age_min=10)
    assert (low.item(), high.item()) == (11, 14)  # round(12 - 1.2) = 11, round(12 + 2) = 14
    # Multiples interpolated between knots: at 12, halfway between 10 and 14, below is 2 and above 1.
    rule = SpreadRule(knots=(10.0, 14.0), below=(1.0, 3.0), above=(2.0, 0.0))
    assert [m.item() for m in rule.multiples(torch.tensor([12.0]))] == [2.0, 1.0]
    assert [m.item() for m in rule.multiples(torch.tensor([30.0]))] == [3.0, 0.0]  # constant past the last knot
    low, high = rule.read(probs, torch.tensor([12.0]), age_min=10)
    assert (low.item(), high.item()) == (10, 13)
    with pytest.raises(ValueError, match="knots must increase"):
        SpreadRule(knots=(10.0, 10.0), below=(1.0, 1.0), above=(1.0, 1.0))


def test_a_spread_rule_always_holds_the_age_shown():
    # Off-centre, skewed and near-certain distributions, with multiples of 0: the range is still the shown age.
    ages = torch.arange(1, 117, dtype=torch.float32)
    logits = torch.cat([-(((ages[None, :] - torch.tensor([[c]])) / w) ** 2) for c, w in
                        ((1.0, 0.3), (2.6, 1.5), (3.4, 0.8), (70.0, 20.0), (116.0, 2.0))])
    for rule in (SpreadRule(below=(0.0,), above=(0.0,)), SpreadRule(knots=(1.0, 60.0), below=(0.0, 3.0),
                                                                       above=(2.0, 0.0))):
        est = decode_age(logits, 1, rule)
        shown = est.years.round()
        assert bool(((est.low <= shown) & (shown <= est.high)).all())
        assert bool((est.low >= 1).all() and (est.high <= 116).all())
    # A flat distribution (spread 33 years) would give 1-116: narrowed to at most max_width, the estimate inside.
    flat = decode_age(torch.zeros(1, 116), 1, SpreadRule())
    assert flat.high - flat.low <= 40 and flat.low <= flat.years.round() <= flat.high
    narrow = decode_age(torch.zeros(1, 116), 1, SpreadRule(max_width=10))
    assert 9 <= float(narrow.high - narrow.low) <= 10


def test_gender_call_says_unsure_below_the_threshold_and_holds_near_it():
    assert gender_call(0.54, 0.6) == "unsure" and gender_call(0.7, 0.6) == "female" and gender_call(0.3, 0.6) == "male"
    assert gender_call(0.49, 0.5) == "male"  # a threshold of 0.5: never unsure
    # Held: a side is kept until its confidence is below threshold - margin, and taken from threshold + margin.
    assert gender_call(0.57, 0.6, held="female", margin=0.05) == "female"
    assert gender_call(0.54, 0.6, held="female", margin=0.05) == "unsure"
    assert gender_call(0.62, 0.6, held="unsure", margin=0.05) == "unsure"
    assert gender_call(0.66, 0.6, held="unsure", margin=0.05) == "female"
    assert gender_call(0.48, 0.5, held="female", margin=0.03) == "female"  # no unsure zone: held across 0.5
    assert gender_call(0.46, 0.5, held="female", margin=0.03) == "male"
    assert gender_call(0.2, 0.6, held="female", margin=0.05) == "male"  # a clear change at once


def test_temperature_widens_the_range():
    # Unimodal logits, peaked at 20, 35, 50, 80: a hotter softmax spreads them.
    ages = torch.arange(1, 117, dtype=torch.float32)
    logits = -(((ages[None, :] - torch.tensor([[20.0], [35.0], [50.0], [80.0]])) / 6) ** 2)
    narrow = decode_age(logits, 1, RangeRule(temperature=0.5))
    wide = decode_age(logits, 1, RangeRule(temperature=3.0))
    assert bool(((wide.high - wide.low) > (narrow.high - narrow.low)).all())


def test_temperature_and_level_shape_the_range_not_the_estimate():
    # Skewed distributions (one against the first bin): a tempered softmax would move their means.
    ages = torch.arange(1, 117, dtype=torch.float32)
    logits = -(((ages[None, :] - torch.tensor([[3.0], [70.0]])) / 8) ** 2)
    plain = decode_age(logits, 1)
    for temperature, level in ((0.5, 0.8), (3.0, 0.6), (1.0, 0.95)):
        est = decode_age(logits, 1, RangeRule.central(level, temperature))
        assert torch.equal(est.years, plain.years)
    assert not torch.allclose(torch.softmax(logits / 3.0, -1) @ ages, plain.years, atol=0.5)  # a case that would move


def test_gender_probability():
    assert gender_probability(torch.tensor([0.0])).item() == pytest.approx(0.5)
    assert gender_probability(torch.tensor([2.0]), temperature=2.0).item() == pytest.approx(1 / (1 + math.exp(-1)))


def test_lds_weights_by_hand():
    from training.fit.losses import age_density, face_weights, inverse_sqrt_weights

    # Three faces aged 20 and one aged 60, no smoothing to speak of: densities 3/4 and 1/4.
    low = torch.tensor([20, 20, 20, 60])
    density = age_density(low, low, age_min=1, num_bins=116, sigma=0.01)
    assert density[19].item() == pytest.approx(0.75) and density[59].item() == pytest.approx(0.25)
    table = inverse_sqrt_weights(density, low, low, age_min=1)
    w = face_weights(table, low, low, age_min=1)
    assert (w[3] / w[0]).item() == pytest.approx(3**0.5)  # 1 / sqrt(density)
    assert w.mean().item() == pytest.approx(1.0)  # the training faces weigh 1 on average
    # A group's face spreads over its years (60-69: a tenth at each) and weighs the mean of its years.
    group_low, group_high = torch.tensor([20, 60]), torch.tensor([20, 69])
    density = age_density(group_low, group_high, 1, 116, sigma=0.01)
    assert density[59].item() == pytest.approx(0.05) and density[19].item() == pytest.approx(0.5)
    table = inverse_sqrt_weights(density, group_low, group_high, 1)
    assert face_weights(table, group_low, group_high, 1)[1].item() == pytest.approx(table[59:69].mean().item())
    # Years no face has weigh at most max_ratio times the commonest year.
    assert table.max().item() == pytest.approx(10 * table[19].item())


def test_lds_density_is_not_diluted_at_the_ends_of_the_age_range():
    from training.fit.losses import age_density

    # Every age once: the smoothed density is flat, age 1 and 116 included (a kernel cut at the ends
    # and not renormalised would give them about half of the middle's).
    ages = torch.arange(1, 117)
    flat = age_density(ages, ages, 1, 116, sigma=2.0)
    assert torch.allclose(flat, torch.full((116,), 1 / 116), rtol=1e-4)
    # The commonest age (1, as in UTKFace) stays the densest after smoothing.
    ages = torch.tensor([1] * 50 + [2] * 20 + [3] * 20 + [4] * 20 + [5] * 20 + [30] * 40)
    density = age_density(ages, ages, 1, 116, sigma=2.0)
    assert density[0] > density[2:5].max()


def test_open_group_at_the_top_spreads_its_faces_as_old_ages_are_spread():
    from training.data.ages import old_age_prior
    from training.fit.losses import age_density

    density = age_density(torch.tensor([70]), torch.tensor([116]), 1, 116, sigma=0.01)
    assert torch.allclose(density[69:], old_age_prior(), atol=1e-6) and density[99:].sum() < 0.05


def test_reweighted_age_loss_counts_rare_ages_more():
    from training.fit.losses import LossWeights, age_density, inverse_sqrt_weights, multitask_loss

    low = torch.tensor([20, 20, 20, 60])
    table = inverse_sqrt_weights(age_density(low, low, 1, 116, 2.0), low, low, 1)
    logits = torch.zeros(4, 116)
    logits[:, 19] = 5.0  # every face predicted 20: right for the three, wrong for the one aged 60
    gender = torch.zeros(4)
    plain, _ = multitask_loss(logits, torch.zeros(4), low, low, gender, 1, LossWeights(gender=0))
    weighted, _ = multitask_loss(logits, torch.zeros(4), low, low, gender, 1, LossWeights(gender=0), table)
    assert weighted.item() > plain.item()  # the wrong, rare face weighs more
    with pytest.raises(ValueError, match="--age-reweight must be one of none, lds"):
        LossWeights(age_reweight="inverse")
