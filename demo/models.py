"""Model A (CNN from scratch) and Model B (a pretrained backbone), both with AgeGenderHeads.

Model B's backbones: ImageNet networks (MobileNetV2, EfficientNet-Lite0/2) or dlib's
face-recognition ResNet (`demo.dlib_resnet`).

`build_model(architecture, num_age_bins, **kwargs)` is the one registry the trainer and the
checkpoint loader use. Nothing here downloads: ImageNet weights for training are loaded by
`training.backbones`; the app loads whole trained models through `demo.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from demo.dlib_resnet import DLIB_MEAN, DLIB_STD
from demo.heads import AgeGenderHeads


class ScratchCNN(nn.Module):
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
        in_ch = widths[0]
        for i, width in enumerate(widths):
            layers += [_conv_bn_relu(in_ch, width), _conv_bn_relu(width, width)]
            if i < len(widths) - 1:
                layers += [nn.MaxPool2d(2), nn.Dropout2d(block_dropout)]
            in_ch = width
        self.trunk = nn.Sequential(*layers)
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


class BackboneModel(nn.Module):
    """Model B: a pretrained backbone's feature extractor, global pooling and the two heads.

    `stages` lists the backbone's blocks from input to output, so the trainer can freeze all of
    them (stage 1) and then unfreeze the top few (stage 2).
    """

    def __init__(self, backbone: nn.Module, stages: list[nn.Module], num_features: int, num_age_bins: int,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.backbone = backbone
        self.stages = stages  # plain list: the modules are registered through self.backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = AgeGenderHeads(num_features, num_age_bins, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.pool(self.backbone(x)).flatten(1))

    def set_trainable_stages(self, count: int) -> None:
        """Train the heads and the top `count` backbone stages; freeze the rest.

        Frozen stages also stay in eval mode (see `train`), so their BatchNorm statistics keep
        the ImageNet values instead of drifting on small batches.
        """
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for stage in self.stages[len(self.stages) - count:] if count else []:
            for p in stage.parameters():
                p.requires_grad_(True)
        self._trainable = count

    def train(self, mode: bool = True) -> BackboneModel:
        super().train(mode)
        count = getattr(self, "_trainable", len(self.stages))
        if mode:
            for stage in self.stages[: len(self.stages) - count]:
                stage.eval()
        return self


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
    from demo.dlib_resnet import DlibResNet

    net = DlibResNet()
    # The 128-d identity layer is left out: the heads read the 256 pooled features beneath it.
    return BackboneModel(nn.Sequential(*net.stages), net.stages, net.num_features, num_age_bins, dropout)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "scratch_cnn": ScratchCNN,
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_lite0": _efficientnet_lite("efficientnet_lite0"),
    "efficientnet_lite2": _efficientnet_lite("efficientnet_lite2"),
    "dlib_resnet": _dlib_resnet,
}

# Input normalisation each backbone was pretrained with (Model A uses the ImageNet values too).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite: (x - 127) / 128 on 0..255 pixels, i.e. (x/255 - 0.498) / 0.502.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
NORMALISATION = {
    "scratch_cnn": (IMAGENET_MEAN, IMAGENET_STD),
    "mobilenet_v2": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (LITE_MEAN, LITE_STD),
    "efficientnet_lite2": (LITE_MEAN, LITE_STD),
    "dlib_resnet": (DLIB_MEAN, DLIB_STD),
}


def build_model(architecture: str, num_age_bins: int, **kwargs) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](num_age_bins=num_age_bins, **kwargs)
