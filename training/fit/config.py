"""Every setting of a training run, in one dataclass; the command line and config files are made from it.

Each field of `TrainConfig` (and of the nested `LossWeights` and `AugmentConfig`) is declared once,
with its type, default and help; `add_arguments` turns them into command-line flags and
`from_dict` reads a saved `train_config.json` (or any JSON file of some of the fields) back.

"a" and "b" name the two shipped models: `--model` starts from one's defaults (architecture,
input size, recipe, name). How a network is trained is the run's `--recipe`, a setting like any
other: a pretrained architecture can train from scratch and a from-scratch one be fine-tuned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import torch

from demo.checkpoint import ModelConfig, flip_mode
from demo.faces import CROP_MARGIN, CROP_SIZE
from demo.heads import AGE_ESTIMATES
from demo.models import architecture
from training.data import spec
from training.data.dataset import AugmentConfig
from training.fit.losses import LossWeights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """The defaults of one shipped model."""

    name: str
    architecture: str
    input_size: int
    recipe: str


PRESETS = {
    "a": Preset("Model A (CNN from scratch)", "scratch_cnn", 112, "from_scratch"),
    # dlib's face-recognition ResNet won the backbone contest (README, tools.compare_backbones).
    "b": Preset("Model B (transfer learning)", "dlib_resnet", 128, "two_stage"),
}


def setting(default, help: str, *, flag: str | None = None, **kwargs):
    """A config field with its command-line help (and flag, where it differs from --field-name)."""
    metadata = {"help": help, "flag": flag}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    if is_dataclass(default):
        return field(default_factory=type(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


# How the 80 % range is fitted after training (TrainConfig.range_rule; demo.heads).
RANGE_RULES = ("spread", "belt", "percentiles")


@dataclass
class TrainConfig:
    """Every setting of a run; saved as RUN_DIR/train_config.json."""

    model: str = setting("a", f"the shipped model whose defaults to start from: {' or '.join(PRESETS)}")
    data: str = setting("data/faces", "folder written by training.prepare")
    mix: dict[str, float] = setting({}, "share of each epoch per data set, e.g. utkface=0.6,fairface=0.4 "
                                    "(default: natural proportions)")
    out: str = setting("", "run folder (default: runs/model_MODEL)")
    name: str = setting("", "the model's name in the app and on its card (default: the shipped model's)")
    architecture: str = setting("", "network: scratch_cnn, dlib_resnet, mobilenet_v2, efficientnet_lite0 or _lite2 "
                                "(default: the shipped model's)")
    recipe: str = setting("", "how to train it: from_scratch or two_stage (default: the shipped model's)")
    input_size: int = setting(0, "model input side in pixels, crops are 128 (default: the shipped model's)")
    widths: tuple[int, ...] = setting((32, 64, 128, 256), "scratch_cnn trunk widths, comma-separated")
    backbone_weights: str | None = setting(None, "two_stage: the pretrained weights as a file (ImageNet .pth, dlib's "
                                           ".dat, or a trained model's model.safetensors); default: downloaded")
    init_from: str | None = setting(None, "start every weight, heads included, from a trained model of the same "
                                    "network (its folder): continue training it, e.g. on more data")
    age_adjust_tolerance: float = setting(0.05, "after training: adjust the age head towards ages rare in training "
                                          "(post-hoc logit adjustment) as far as costs at most this many years of "
                                          "validation MAE; 0: no adjustment")
    range_rule: str = setting("belt", "after training: how the 80 %% range is read and fitted: spread (the "
                              "estimate plus and minus multiples of the distribution's spread, normalised "
                              "conformal quantiles by estimate), belt (the same multiples fitted and read by "
                              "true age: each true age gets its coverage) or percentiles (before round six: "
                              "percentiles per region of the estimate, fitted to the age bands)")
    age_estimate: str = setting("mean", "after training: the age shown, read from the age distribution: its mean "
                                "or its median (spread and belt ranges only; fitted around it)")
    range_spread_power: float = setting(1.0, "spread and belt only: the distribution's spread raised to this power "
                                        "before the multiples scale it (above 1: narrower ranges for faces the "
                                        "model is sure of, wider for those it is not)")
    range_sweeps: int = setting(8, "percentiles only: sweeps of the range fit that bring every age band's coverage "
                                   "within 70-90 %%; 0 keeps the split-conformal levels per region alone")
    flip: str = setting("off", "test-time flip in calibration and serving: average the answers (on), or the gender "
                        "answer alone (gender), over the face and its mirror image, or not (off)")
    epochs: int = setting(30, "epochs in all")
    stage1_epochs: int = setting(1, "two_stage: epochs training the heads alone, the trunk frozen")
    finetune_stages: int = setting(99, "two_stage: top trunk stages fine-tuned after that (more than it has: all)")
    batch_size: int = setting(128, "faces per optimiser step")
    lr: float = setting(2e-3, "learning rate (of the heads, under two_stage)")
    finetune_lr: float = setting(3e-4, "two_stage: learning rate of the top trunk stage")
    layer_decay: float = setting(0.8, "two_stage: each stage below the top learns at this times the rate above it")
    weight_decay: float = setting(5e-4, "AdamW weight decay")
    start_decay: float = setting(0.0, "two_stage: pull the fine-tuned trunk towards its pretrained weights instead "
                                 "of towards zero (L2-SP): each step moves every trunk weight this times its "
                                 "learning rate of the way back to its start (AdamW's decoupled decay, anchored at "
                                 "the start); 0: off, the trunk decays by --weight-decay")
    warmup_epochs: float = setting(1.0, "epochs of linear warm-up at the start of each stage, then cosine decay")
    dropout: float = setting(0.3, "dropout before each head layer")
    ema: float = setting(0.0, "keep an exponential moving average of the weights, this much of the old kept each "
                         "step (e.g. 0.999), and validate, keep and calibrate it instead of the weights; 0: off")
    loss: LossWeights = setting(LossWeights(), "")
    distill_from: str | None = setting(None, "a trained model's folder (e.g. Model B's) whose answers on the training "
                                       "faces the run learns beside the labels (training.fit.distill)")
    distill_weight: float = setting(0.5, "with --distill-from: the teacher's share of the loss, the labels' the rest")
    mixup: float = setting(0.0, "blend each training face with another of its batch, lam ~ Beta(this, this), the "
                           "loss blended alike (training.fit.mixup; e.g. 0.2); 0: off")
    mixup_years: float = setting(0.0, "with --mixup: draw each face's partner among faces of about its age, a "
                                 "Gaussian of this many years on the labelled ages (C-Mixup); 0: any face")
    augment: AugmentConfig = setting(AugmentConfig(), "")
    patience: int = setting(6, "epochs without a better validation loss before stopping")
    max_steps: int | None = setting(None, "stop after this many optimiser steps (smoke runs)")
    max_minutes: float | None = setting(None, "stop after this many minutes of training steps, all sessions together")
    limit: int | None = setting(None, "use only a fixed random N faces of each split")
    train_limit: int | None = setting(None, "use only a fixed random N training faces (validation stays whole)")
    device: str = setting("auto", "cpu, cuda or auto")
    # Speed options; the README's speed table measures each on the CPU (tools.speed).
    amp: bool = setting(True, "bf16 autocast on CUDA, and on CPUs with native bf16 (off elsewhere: emulated, slow)")
    channels_last: bool = setting(True, "model and input in channels_last memory order")
    compile: bool = setting(False, "torch.compile the training forward and backward")
    sync_bn: bool = setting(True, "under torchrun on GPUs: BatchNorm statistics over the global batch "
                            "(SyncBatchNorm), as one process computes them; torch runs it on GPUs only")
    threads: int = setting(0, "torch's intra-op threads; 0: one per core. The one setting --resume may change")
    num_workers: int = setting(-1, "data-loader workers; -1: min(8, CPUs) on CUDA, 0 on the CPU (workers take "
                               "cores from the arithmetic)", flag="--workers")
    crops_in_memory: bool = setting(True, "decode every crop once into memory (49 KB a face; fastest when it fits); "
                                    "--no-crops-in-memory decodes each as drawn, memory staying the compressed "
                                    "pack's (about 18 KB a face, lossless)")
    seed: int = setting(0, "seed of the weights, the order of faces and the augmentation")

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"--model must be {' or '.join(PRESETS)}, not {self.model!r}")
        preset = PRESETS[self.model]
        self.out = self.out or f"runs/model_{self.model}"
        self.name = self.name or preset.name
        self.architecture = self.architecture or preset.architecture
        self.recipe = self.recipe or preset.recipe
        self.input_size = self.input_size or preset.input_size
        self.flip = flip_mode(self.flip, "--flip")
        if self.range_rule not in RANGE_RULES:
            raise ValueError(f"--range-rule must be {' or '.join(RANGE_RULES)}, not {self.range_rule!r}")
        if self.range_spread_power <= 0:
            raise ValueError(f"--range-spread-power must be above 0, not {self.range_spread_power}")
        if self.age_estimate not in AGE_ESTIMATES or (self.age_estimate != "mean" and self.range_rule == "percentiles"):
            raise ValueError(f"--age-estimate must be {' or '.join(AGE_ESTIMATES)} (median with --range-rule spread "
                             f"or belt only), not {self.age_estimate!r}")
        if self.mixup < 0 or self.mixup_years < 0:
            raise ValueError(f"--mixup and --mixup-years must be 0 (off) or more, not {self.mixup}, {self.mixup_years}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be at least 0 and below 1 (e.g. 0.999; 0: none), not {self.ema}")
        unknown = set(self.mix) - set(spec.names())
        if unknown:
            raise ValueError(f"--mix names {', '.join(sorted(unknown))}; known data sets: {', '.join(spec.names())}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.cuda and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}, but this torch ({torch.__version__}) sees no CUDA GPU: "
                             "use --device cpu, or check the driver (nvidia-smi)")
        if self.amp and not self.cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            log.info("bf16 autocast off: this CPU has no native bf16")
            self.amp = False
        if self.num_workers < 0:
            self.num_workers = min(8, os.cpu_count() or 1) if self.cuda else 0

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def model_config(self) -> ModelConfig:
        arch = architecture(self.architecture)
        arch_kwargs = {key: list(value) if isinstance(value, tuple) else value
                       for key, value in ((key, getattr(self, key)) for key in arch.settings)}
        tasks = tuple(t for t, w in (("age", self.loss.age), ("gender", self.loss.gender)) if w)
        return ModelConfig(
            name=self.name, architecture=self.architecture, input_size=self.input_size, mean=arch.mean, std=arch.std,
            crop_size=CROP_SIZE, crop_margin=CROP_MARGIN, arch_kwargs=arch_kwargs, tasks=tasks, flip=self.flip,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from a saved train_config.json or a partial JSON config; unknown keys are refused."""
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict):
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if is_dataclass(kind):
            value = _from_dict(kind, value)
        elif typing.get_origin(kind) is tuple:
            value = tuple(value)
        values[name] = value
    return cls(**values)


# Command line -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig, prefix: str = "") -> None:
    """One flag per field of `cls` (nested dataclasses flattened), defaults suppressed.

    Only the flags given end up in the parsed namespace, under their dotted field path
    ("loss.age"), so they can override a config file or the dataclass defaults.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__) if prefix else parser
    for f in fields(cls):
        kind, path = hints[f.name], prefix + f.name
        if is_dataclass(kind):
            add_arguments(parser, kind, prefix=path + ".")
            continue
        flag = f.metadata.get("flag") or "--" + path.replace(".", "-").replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f"{f.metadata.get('help', '')} (default: {_show(default)})"
        if kind is bool:
            group.add_argument(flag, dest=path, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:
            group.add_argument(flag, dest=path, type=_parser_of(kind), default=argparse.SUPPRESS, help=text,
                               metavar=_metavar(kind))


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return str(value)


def _parser_of(kind):
    if typing.get_origin(kind) in (types.UnionType, typing.Union):  # X | None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return lambda text: tuple(item(part) for part in text.split(",") if part.strip())
    if typing.get_origin(kind) is dict:
        return parse_mix
    return kind


def _metavar(kind) -> str:
    if typing.get_origin(kind) is tuple:
        return "N,N,..."
    if typing.get_origin(kind) is dict:
        return "NAME=SHARE,..."
    return "X"


def parse_mix(text: str) -> dict[str, float]:
    """'utkface=0.6,fairface=0.4' -> {'utkface': 0.6, 'fairface': 0.4}, data set names checked."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        if name not in spec.names() or not share:
            raise argparse.ArgumentTypeError(f"--mix takes NAME=SHARE pairs with NAME in {', '.join(spec.names())}, "
                                             f"not {part!r}")
        mix[name] = float(share)
    return mix


def nest(flat: dict[str, object]) -> dict:
    """{'loss.age': 0} -> {'loss': {'age': 0}}"""
    nested: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(merged.get(key, {}), value) if isinstance(value, dict) and key != "mix" else value
    return merged


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the config file {path}: {error}") from None
