"""Pretrained weights: the ordinary download path (through seeded caches), and local files."""

import pytest
import torch
from safetensors.torch import save_file

from demo.models import build_model
from tests.conftest import pretrained_file
from training.fit.backbones import BackboneDownloadError, load_pretrained


def _seed_hub_cache(cache, repo_id: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/FILES."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "1" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_lite0_downloads_from_timm_through_the_hub_cache(tmp_path, monkeypatch):
    """No --backbone-weights: timm's tf_efficientnet_lite0.in1k, here from a cache seeded with the same tensors."""
    import huggingface_hub.constants
    import timm

    reference = build_model("efficientnet_lite0", 116)
    load_pretrained(reference, "efficientnet_lite0", pretrained_file("efficientnet_lite0"))
    # The file timm would download: its own key names, the ImageNet tensors, in the same order.
    own = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    backbone_keys = [k for k in own if not k.startswith("classifier.")]
    assert len(backbone_keys) == len(reference.backbone.state_dict())
    state = dict(zip(backbone_keys, reference.backbone.state_dict().values()))
    state |= {k: v for k, v in own.items() if k.startswith("classifier.")}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    _seed_hub_cache(tmp_path / "hub", "timm/tf_efficientnet_lite0.in1k",
                    {"model.safetensors": (tmp_path / "model.safetensors").read_bytes()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    model = build_model("efficientnet_lite0", 116)
    load_pretrained(model, "efficientnet_lite0")
    for a, b in zip(model.backbone.state_dict().values(), reference.backbone.state_dict().values()):
        assert torch.equal(a, b)


def test_mobilenet_downloads_through_torchvision_cache(tmp_path, monkeypatch):
    """No --backbone-weights: torchvision's IMAGENET1K_V1 file, here a cache seeded with a file of its layout."""
    from torchvision.models import mobilenet_v2

    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(1)
    cached = mobilenet_v2(weights=None).state_dict()  # torchvision's own key names
    torch.save(cached, checkpoints / "mobilenet_v2-b0353104.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model("mobilenet_v2", 116)
    load_pretrained(model, "mobilenet_v2")
    assert torch.equal(model.backbone[0][0].weight, cached["features.0.0.weight"])


def test_offline_without_a_cache_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(BackboneDownloadError, match="--backbone-weights FILE"):
        load_pretrained(build_model("efficientnet_lite0", 116), "efficientnet_lite0")


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_pretrained(build_model("mobilenet_v2", 116), "mobilenet_v2", tmp_path / "nothing.pth")
