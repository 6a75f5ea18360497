import pytest
import torch

from demo.models import ARCHITECTURES, architecture, build_model
from tests.conftest import pretrained_file
from training.fit.backbones import load_pretrained


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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "dlib_resnet"])
def test_pretrained_weights_load_from_the_files_their_packages_ship(name):
    model = build_model(name, 116)
    before = next(model.backbone.parameters()).clone()
    load_pretrained(model, name, pretrained_file(name))
    assert not torch.equal(before, next(model.backbone.parameters()))


def test_pretrained_file_of_another_architecture_is_refused():
    model = build_model("efficientnet_lite0", 116)
    with pytest.raises(ValueError, match="does not match"):
        load_pretrained(model, "efficientnet_lite0", pretrained_file("efficientnet_lite2"))


def test_every_architecture_spec_builds_a_staged_model_that_takes_its_smallest_input():
    for name, spec in ARCHITECTURES.items():
        model = build_model(name, 116).eval()
        assert model.stages and all(any(True for _ in s.parameters()) for s in model.stages)
        # The stages cover the whole trunk: every parameter is in a stage or a head.
        staged = {id(p) for s in model.stages for p in s.parameters()} | {id(p) for p in model.heads.parameters()}
        assert staged == {id(p) for p in model.parameters()}, name
        with torch.inference_mode():
            age_logits, _ = model(torch.randn(1, 3, spec.min_input_size, spec.min_input_size))
        assert age_logits.shape == (1, 116)
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        architecture("vgg")


def test_scratch_cnn_stages_freeze_like_a_backbone():
    model = build_model("scratch_cnn", 116, widths=[8, 16])
    model.set_trainable_stages(1)
    trainable = [any(p.requires_grad for p in s.parameters()) for s in model.stages]
    assert trainable == [False] * (len(model.stages) - 1) + [True]
    model.train()
    assert not model.stages[0].training and model.stages[-1].training
