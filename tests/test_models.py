import pytest
import torch
from training.backbones import PRETRAINED_FILES, load_pretrained_backbone

from demo.models import build_model
from tests.conftest import SHARED_WEIGHTS


@pytest.mark.parametrize("architecture", ["scratch_cnn", "mobilenet_v2", "efficientnet_lite0"])
@pytest.mark.parametrize("size", [64, 112])
def test_output_shapes(architecture, size):
    model = build_model(architecture, num_age_bins=116).eval()
    with torch.inference_mode():
        age_logits, gender_logit = model(torch.randn(3, 3, size, size))
    assert age_logits.shape == (3, 116)
    assert gender_logit.shape == (3,)


def test_scratch_widths_are_configurable():
    model = build_model("scratch_cnn", 116, widths=[8, 16])
    assert model.heads.age[1].in_features == 16


def test_stage_freezing_trains_only_the_top_stages():
    model = build_model("efficientnet_lite0", 116)
    model.set_trainable_stages(0)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    model.set_trainable_stages(2)
    trainable = [any(p.requires_grad for p in s.parameters()) for s in model.stages]
    assert trainable == [False] * (len(model.stages) - 2) + [True, True]
    model.train()
    assert not model.stages[0].training and model.stages[-1].training  # frozen BN stays in eval


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="needs ../shared/weights")
@pytest.mark.parametrize("architecture", list(PRETRAINED_FILES))
def test_imagenet_weights_load_from_the_shared_files(architecture):
    model = build_model(architecture, 116)
    before = next(model.backbone.parameters()).clone()
    load_pretrained_backbone(model, architecture, SHARED_WEIGHTS / PRETRAINED_FILES[architecture])
    assert not torch.equal(before, next(model.backbone.parameters()))


def test_pretrained_file_of_another_architecture_is_refused():
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip("needs ../shared/weights")
    model = build_model("efficientnet_lite0", 116)
    with pytest.raises(ValueError, match="does not match"):
        load_pretrained_backbone(model, "efficientnet_lite0", SHARED_WEIGHTS / PRETRAINED_FILES["efficientnet_lite2"])
