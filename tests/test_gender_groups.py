"""Worst-group reweighting of the gender loss (training.fit.gender_groups), and the signed age error."""

import math

import numpy as np
import pytest
import torch

from training.data import spec
from training.evaluation.metrics import Outputs, group_metrics, year_metrics
from training.fit.gender_groups import COLUMN, GenderGroups
from training.fit.losses import gender_loss

UTK, FF = spec.index("utkface"), spec.index("fairface")


def _groups() -> GenderGroups:
    # 600 White and 200 Black UTKFace faces, 200 Black FairFace faces.
    return GenderGroups(keys=((UTK, 0), (UTK, 1), (FF, 1)), names=("utkface_White", "utkface_Black", "fairface_Black"),
                        counts=(600, 200, 200))


def test_groups_answered_worse_weigh_more_and_the_faces_weigh_one_on_average():
    groups = _groups()
    row = {COLUMN + "utkface_White": 0.2, COLUMN + "utkface_Black": 0.4, COLUMN + "fairface_Black": 0.4}
    table = groups.weight_table(row, power=1.0)
    w = [float(table[d, r]) for d, r in groups.keys]
    # Twice the White faces' loss: twice their weight.
    assert w[1] == pytest.approx(2 * w[0]) and w[2] == pytest.approx(w[1])
    assert (600 * w[0] + 200 * w[1] + 200 * w[2]) / 1000 == pytest.approx(1.0)
    squared = groups.weight_table(row, power=2.0)
    assert float(squared[UTK, 1]) / float(squared[UTK, 0]) == pytest.approx(4.0)
    assert float(table[FF, 0]) == 1.0  # a group the run has no faces of is left alone


def test_no_reweighting_when_off_or_before_the_first_epoch():
    groups = _groups()
    assert groups.weight_table({COLUMN + "utkface_White": 0.2}, power=0.0) is None
    assert groups.weight_table(None, power=2.0) is None
    # A group that drew no face last epoch (nan) keeps weight 1 before scaling.
    table = groups.weight_table({COLUMN + "utkface_White": 0.2, COLUMN + "utkface_Black": 0.2,
                                 COLUMN + "fairface_Black": math.nan}, power=1.0)
    assert float(table[UTK, 0]) == pytest.approx(float(table[FF, 1]))


def test_batch_totals_become_each_groups_mean_loss():
    groups = _groups()
    logit, gender = torch.tensor([0.0, 2.0, -1.0, 3.0]), torch.tensor([1, 1, 0, 0])
    dataset, race = torch.tensor([UTK, UTK, UTK, FF]), torch.tensor([0, 0, 1, 1])
    columns = groups.columns(groups.totals(logit, gender, dataset, race))
    by_face = [gender_loss(logit[i:i + 1], gender[i:i + 1]).item() for i in range(4)]
    assert columns[COLUMN + "utkface_White"] == pytest.approx((by_face[0] + by_face[1]) / 2)
    assert columns[COLUMN + "utkface_Black"] == pytest.approx(by_face[2])
    assert columns[COLUMN + "fairface_Black"] == pytest.approx(by_face[3])


def test_a_weighted_gender_loss_by_hand():
    logit, gender = torch.tensor([0.0, 2.0]), torch.tensor([1, 1])
    plain = [math.log(2), math.log(1 + math.exp(-2))]
    weighted = gender_loss(logit, gender, torch.tensor([3.0, 1.0])).item()
    assert weighted == pytest.approx((3 * plain[0] + plain[1]) / 2)


def test_groups_of_a_pack_name_each_data_sets_own_races(tiny_pack):
    from training.data.pack import FacePack

    pack = FacePack(tiny_pack)
    groups = GenderGroups.of(pack, pack.indices("train"))
    assert sum(groups.counts) == len(pack.indices("train"))
    assert all(name.split("_", 1)[0] in spec.names() for name in groups.names)


def _outputs(ages_low, ages_high, estimates, dataset) -> Outputs:
    n = len(ages_low)
    logits = torch.full((n, 116), -1e4)
    logits[torch.arange(n), torch.tensor(estimates) - 1] = 0.0  # every face sure of one year
    return Outputs(logits, torch.zeros(n), torch.tensor(ages_low), torch.tensor(ages_high), torch.zeros(n),
                   torch.zeros(n, dtype=torch.long), torch.full((n,), dataset))


def test_signed_error_says_which_way_the_ages_are_wrong():
    years = year_metrics(_outputs([10, 30], [10, 30], [14, 28], UTK), age_min=1)
    assert years["age_signed_error"] == pytest.approx((4 - 2) / 2)
    # A group label's middle: 10-19 -> 14.5; a 20 for it is +5.5 (made older).
    groups = group_metrics(_outputs([10, 10], [19, 19], [20, 14], FF), spec.get("fairface"), age_min=1)
    assert groups["age_signed_error"] == pytest.approx(np.mean([5.5, -0.5]))
    # The open group at the top counts its faces where UTKFace's over-70s are (about 78), not at its middle (93).
    from training.data.ages import OLD_FROM, old_age_prior

    old = (torch.arange(OLD_FROM, 117).float() * old_age_prior()).sum().item()
    top = group_metrics(_outputs([70], [116], [75], FF), spec.get("fairface"), age_min=1)
    assert 74 < old < 82 and top["age_signed_error"] == pytest.approx(75 - old, abs=1e-4)
