import math

import pytest
import torch

from demo.heads import decode_age, gender_probability
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
    est = decode_age(probs.log(), age_min=10, coverage=0.8)
    assert est.mean.item() == pytest.approx(12.0)
    assert (est.low.item(), est.high.item()) == (10, 13)
    # A 50 % range: 25th pct reaches at age 12 (cdf .8), 75th pct at 12 too.
    est = decode_age(probs.log(), age_min=10, coverage=0.5)
    assert (est.low.item(), est.high.item()) == (12, 12)


def test_temperature_widens_the_range():
    # Unimodal logits, peaked at 20, 35, 50, 80: a hotter softmax spreads them.
    ages = torch.arange(1, 117, dtype=torch.float32)
    logits = -(((ages[None, :] - torch.tensor([[20.0], [35.0], [50.0], [80.0]])) / 6) ** 2)
    narrow = decode_age(logits, 1, temperature=0.5)
    wide = decode_age(logits, 1, temperature=3.0)
    assert bool(((wide.high - wide.low) > (narrow.high - narrow.low)).all())


def test_gender_probability():
    assert gender_probability(torch.tensor([0.0])).item() == pytest.approx(0.5)
    assert gender_probability(torch.tensor([2.0]), temperature=2.0).item() == pytest.approx(1 / (1 + math.exp(-1)))
