"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`, Davis King, public domain) in PyTorch.

The network of dlib's `examples/dnn_face_recognition_ex.cpp`: a 7x7/2 convolution, a per-channel
affine (dlib's BatchNorm folded into scale and shift), ReLU and a 3x3/2 max pool; then residual
levels of 3x32, 4x64, 3x128, 3x256 and 1x256 blocks, global average pooling and a 128-d linear
layer without bias. The first block of every level from 64 on halves the size; its shortcut is a
2x2 average pool of its input. Two of dlib's conventions are kept exactly:

- strided convolutions and pools have no padding (3x3 stride-1 convolutions pad by 1);
- a residual sum of tensors of different shapes pads both with zeros, at the end of each
  dimension, to the larger shape (dlib's `add_prev`). So a shortcut with fewer channels fills
  only the first ones, and at 150 px input the 4x4 shortcut of the fourth level meets a 3x3 block
  output padded to 4x4.

Input: RGB in 0..1, normalised with DLIB_MEAN and DLIB_STD, which is dlib's (pixel - mean) / 256.
Weights: `python -m tools.convert_dlib_backbone` writes them from dlib's own file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# dlib's input_rgb_image: (pixel - (122.782, 117.001, 104.298)) / 256 on 0..255 pixels.
DLIB_MEAN = (122.782 / 255, 117.001 / 255, 104.298 / 255)
DLIB_STD = (256 / 255,) * 3
DESCRIPTOR_SIZE = 128
# (width, blocks) of each level from input to output; the first block of a level after the first downsamples.
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


class Affine(nn.Module):
    """y = scale * x + shift per channel: dlib's inference-time replacement of BatchNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b, each zero-padded at the end of every dimension to the larger shape (dlib's add_prev)."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """conv-affine-ReLU-conv-affine plus the shortcut, then ReLU; `down` halves the size."""

    def __init__(self, in_ch: int, out_ch: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=0 if down else 1)
        self.affine1 = Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.affine2 = Affine(out_ch)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2) if self.down else x
        return F.relu(add_padded(y, shortcut))


class DlibResNet(nn.Module):
    """The trunk as a list of stages (stem, then one per level) and the 128-d descriptor layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2), Affine(32), nn.ReLU(), nn.MaxPool2d(3, 2))
        levels, in_ch = [], 32
        for i, (width, blocks) in enumerate(LEVELS):
            levels.append(nn.Sequential(*(ResidualBlock(in_ch if b == 0 else width, width, down=i > 0 and b == 0)
                                          for b in range(blocks))))
            in_ch = width
        self.levels = nn.ModuleList(levels)
        self.num_features = in_ch
        self.descriptor = nn.Linear(in_ch, DESCRIPTOR_SIZE, bias=False)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.levels]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last level's feature map, before pooling."""
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor (not normalised, as dlib returns it)."""
        return self.descriptor(self.features(x).mean(dim=(2, 3)))
