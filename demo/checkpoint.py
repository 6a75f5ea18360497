"""The one model format: a folder with `model.safetensors` and `config.json`.

The same folder layout is written by training, kept in `weights/`, pushed to the Hub, and read by
`load_model` for evaluation, the app and the tests. config.json holds everything needed to use
the weights (architecture, input size, crop geometry, normalisation, age bins, calibration
temperatures, label names), so nothing is guessed from tensor shapes. Only safetensors are read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from demo.engine import default_engine, export_model
from demo.files import atomic_write
from demo.heads import (
    AGE_ESTIMATES,
    AGE_MAX,
    AGE_MIN,
    MULTIPLES_AT,
    AgeEstimate,
    AgeRangeRule,
    RangeRule,
    SpreadRule,
    decode_age,
    gender_probability,
)
from demo.models import build_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# Test-time flip: which answers are the mean over the face and its mirror image. "on": age and gender;
# "gender": the gender answer alone, the age distribution the face's own (the mean of two distributions
# is wider, which can widen a model's calibrated ranges). Both run the two images as one batch.
FLIP_MODES = ("off", "gender", "on")
# How a config's range is read (ModelConfig.range_kind).
RANGE_KINDS = ("spread", "percentiles")


def flip_mode(value: str | bool, name: str = "flip") -> str:
    """A flip setting checked against FLIP_MODES; true / false (saved before the gender-only mode) read as on / off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in FLIP_MODES:
        raise ValueError(f"{name} must be one of {', '.join(FLIP_MODES)}, not {value!r}")
    return value


class ModelLoadError(RuntimeError):
    """A model folder is missing a file, or a file is corrupt or inconsistent."""


@dataclass
class ModelConfig:
    name: str  # shown in the app, e.g. "Model A (from scratch)"
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_size: int
    crop_margin: float
    age_min: int = AGE_MIN
    age_max: int = AGE_MAX
    arch_kwargs: dict = field(default_factory=dict)
    # How the range is read from the age distribution (demo.heads), fitted on validation so that it holds
    # about `range_coverage` of true ages, 70-90 % in every age band (training.evaluation.ranges):
    # "spread": the estimate minus range_below[k] and plus range_above[k] times the distribution's
    #   standard deviation (to the power range_spread_power), interpolated between the estimates
    #   range_knots[k], at most range_max_width years wide (SpreadRule); the multiples read at the estimate
    #   or, range_multiples_at "age", at each age the range may hold (a confidence belt);
    # "percentiles" (configs written before round six): from the range_lower[k] to the range_upper[k]
    #   percentile of the distribution at `age_temperature`, for estimates from range_starts[k] on (RangeRule).
    range_kind: str = "spread"
    # The age shown, read from the distribution (AGE_ESTIMATES): its mean (every config written before
    # round seven) or its median, which spread ranges may be centred on (SpreadRule.estimate).
    age_estimate: str = "mean"
    range_coverage: float = 0.8  # what the range claims to hold
    range_knots: tuple[float, ...] = SpreadRule().knots
    range_below: tuple[float, ...] = SpreadRule().below
    range_above: tuple[float, ...] = SpreadRule().above
    range_max_width: float = SpreadRule().max_width
    range_spread_power: float = SpreadRule().power
    range_multiples_at: str = SpreadRule().multiples_at
    age_temperature: float = 1.0
    range_starts: tuple[float, ...] = RangeRule().starts
    range_lower: tuple[float, ...] = RangeRule().lower
    range_upper: tuple[float, ...] = RangeRule().upper
    gender_temperature: float = 1.0  # fitted on validation by log-likelihood
    # Below this confidence max(P(female), 1 - P(female)) the gender answer is "unsure", chosen on
    # validation (training.evaluation.metrics.fit_unsure_below); 0.5: always one of the two labels.
    gender_unsure_below: float = 0.5
    # Added to the age logits (one per year) before anything is read from them: -tau * log of the
    # training faces' age density, tau fitted on validation (post-hoc logit adjustment, Menon et al.
    # 2021). Moves answers towards ages few training faces had (the old, most of all); () for none.
    age_logit_offsets: tuple[float, ...] = ()
    # Which answers average the face and its mirror image (FLIP_MODES); calibration is fitted the same way.
    flip: str = "off"
    gender_labels: tuple[str, str] = ("male", "female")
    tasks: tuple[str, ...] = ("age", "gender")
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.flip = flip_mode(self.flip)
        if self.range_kind not in RANGE_KINDS:
            raise ValueError(f"range_kind must be one of {', '.join(RANGE_KINDS)}, not {self.range_kind!r}")
        if self.age_estimate not in AGE_ESTIMATES:
            raise ValueError(f"age_estimate must be one of {', '.join(AGE_ESTIMATES)}, not {self.age_estimate!r}")
        if self.range_multiples_at not in MULTIPLES_AT:
            raise ValueError(f"range_multiples_at must be one of {', '.join(MULTIPLES_AT)}, "
                             f"not {self.range_multiples_at!r}")
        if self.range_kind == "percentiles" and self.age_estimate != RangeRule.estimate:
            raise ValueError("percentile ranges are read around the mean: age_estimate must be 'mean'")
        if not 0.5 <= self.gender_unsure_below < 1:
            raise ValueError(f"gender_unsure_below must be in [0.5, 1), not {self.gender_unsure_below}")

    @property
    def num_age_bins(self) -> int:
        return self.age_max - self.age_min + 1

    @property
    def range_rule(self) -> AgeRangeRule:
        if self.range_kind == "spread":
            return SpreadRule(self.range_knots, self.range_below, self.range_above, self.range_max_width,
                              self.range_spread_power, self.age_estimate, self.range_multiples_at)
        return RangeRule(self.range_starts, self.range_lower, self.range_upper, self.age_temperature)

    def set_range_rule(self, rule: AgeRangeRule) -> None:
        self.age_estimate = rule.estimate  # a RangeRule's is always the mean
        if isinstance(rule, SpreadRule):
            self.range_kind = "spread"
            self.range_knots, self.range_below, self.range_above = rule.knots, rule.below, rule.above
            self.range_max_width, self.range_spread_power = rule.max_width, rule.power
            self.range_multiples_at = rule.multiples_at
            self.age_temperature = 1.0
        else:
            self.range_kind = "percentiles"
            self.range_starts, self.range_lower, self.range_upper = rule.starts, rule.lower, rule.upper
            self.age_temperature = rule.temperature

    def served_age_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The age head's logits as the model's answers read them: with `age_logit_offsets` added."""
        if not self.age_logit_offsets:
            return logits
        return logits.float() + torch.tensor(self.age_logit_offsets, device=logits.device)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)} | {"range_level"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"format_version {data['format_version']} is not {FORMAT_VERSION}")
        data.setdefault("range_kind", "percentiles")  # written before round six's spread rule
        if "range_level" in data:  # written before ranges had regions: one central level, read the same way
            central = RangeRule.central(data.pop("range_level"))
            data.update(range_starts=central.starts, range_lower=central.lower, range_upper=central.upper)
        for key in ("mean", "std", "gender_labels", "tasks", "age_logit_offsets", "range_starts", "range_lower",
                    "range_upper", "range_knots", "range_below", "range_above"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def build_from_config(config: ModelConfig) -> nn.Module:
    return build_model(config.architecture, config.num_age_bins, **config.arch_kwargs)


def save_model(model: nn.Module, config: ModelConfig, folder: Path) -> None:
    """Write weights and config; each file is replaced atomically, so a crash leaves the old pair."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_write(folder / WEIGHTS_NAME) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "architecture": config.architecture})
    with atomic_write(folder / CONFIG_NAME) as tmp:
        tmp.write_text(config.to_json())


def read_config(folder: Path) -> ModelConfig:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"missing {path}: a model folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return ModelConfig.from_json(path.read_text())
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{path} is not a valid model config: {error}") from error


def forward_with_flip(model: Callable, batch: torch.Tensor, flip: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's (age logits, gender logit) for a batch, with test-time flip `flip` (FLIP_MODES):
    each face and its mirror image run as one batch, then `combine_flipped`."""
    if flip == "off":
        return model(batch)
    return combine_flipped(*model(torch.cat([batch, batch.flip(-1)])), flip)


def combine_flipped(age_logits: torch.Tensor, gender_logit: torch.Tensor, flip: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of n faces followed by their n mirror images, averaged as `flip` says: gender as the mean
    of the two logits; age (mode "on") as the log of the mean of the two distributions, so the result is
    still log-probabilities up to a constant; (mode "gender") the face's own age logits."""
    n = len(age_logits) // 2
    gender = (gender_logit[:n].float() + gender_logit[n:].float()) / 2
    if flip == "gender":
        return age_logits[:n], gender
    probs = torch.softmax(age_logits.float(), dim=-1)
    return ((probs[:n] + probs[n:]) / 2).clamp_min(1e-12).log(), gender


@dataclass
class Prediction:
    """Decoded outputs for a batch of faces; None for a task the model was not trained on (config.tasks)."""

    age: AgeEstimate | None
    p_female: torch.Tensor | None


class LoadedModel:
    """A model in eval mode with its config, turning preprocessed batches into predictions.

    `model` is the PyTorch module (training, evaluation, the maps); `predict` runs it on `engine`
    (demo.engine): "onnx" exports it to ONNX Runtime on the first call, "torch" runs it as it is.
    """

    def __init__(self, model: nn.Module, config: ModelConfig, folder: Path, device: str = "cpu",
                 engine: str | None = None) -> None:
        # channels_last: dlib's ResNet answers a face in 6.9 ms on 2 CPU threads instead of 18.2 (README, Results).
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.config = config
        self.folder = folder
        self.device = device
        # ONNX Runtime runs here on the CPU only: a GPU keeps PyTorch.
        self.engine = "torch" if device != "cpu" else (engine or default_engine())
        self._runner: Callable | None = None
        self._export_lock = threading.Lock()

    @property
    def runner(self) -> Callable:
        """What `predict` runs: the module, or its graph on the engine (exported once, on first use)."""
        if self.engine == "torch":
            return self.model
        if self._runner is None:  # checked again under the lock: two first requests export once
            with self._export_lock:
                if self._runner is None:
                    self._runner = export_model(self.model, self.config.input_size)
        return self._runner

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> Prediction:
        c = self.config
        if self.engine == "torch":
            batch = batch.to(self.device, memory_format=torch.channels_last)
        return decode_outputs(c, *forward_with_flip(self.runner, batch, c.flip))


def decode_outputs(config: ModelConfig, age_logits: torch.Tensor, gender_logit: torch.Tensor) -> Prediction:
    """A model's (flip-combined) outputs as its answers: age, range and P(female), as `config` reads them."""
    c = config
    age = decode_age(c.served_age_logits(age_logits), c.age_min, c.range_rule)
    # A head whose loss had no weight in training is untrained: its output means nothing.
    return Prediction(
        age=age if "age" in c.tasks else None,
        p_female=gender_probability(gender_logit, c.gender_temperature) if "gender" in c.tasks else None,
    )


def load_model(folder: str | Path, device: str = "cpu", engine: str | None = None) -> LoadedModel:
    """Build the model named in `folder/config.json` and load `folder/model.safetensors` strictly; its answers
    run on `engine` (default: `demo.engine.default_engine()`)."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"missing {weights}")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{weights} is not a readable safetensors file: {error}") from error
    try:
        model = build_from_config(config)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ModelLoadError(f"{weights} does not match {folder / CONFIG_NAME}: {error}") from error
    return LoadedModel(model, config, folder, device, engine)
