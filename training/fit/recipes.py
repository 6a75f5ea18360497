"""How a network is trained: a property of the run (`--recipe`), not of the shipped model's letter.

    from_scratch  random weights; the whole network trains from the first step (Model A's recipe).
    two_stage     pretrained weights; first only the heads train on the frozen trunk (stage 1,
                  --stage1-epochs), then the top --finetune-stages trunk stages join them at rates
                  that shrink towards the input (layer-wise decay; Model B's recipe).

Each stage gets AdamW with a linear warm-up and a cosine decay over its own epochs. `check`
refuses a combination that cannot train before any data is read. `--init-from` replaces either
recipe's starting weights with a trained model's (all of them); the stages stay the recipe's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from demo.models import StagedModel, architecture
from training.fit.backbones import load_pretrained
from training.fit.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    number: int  # 1, 2, ...: a new optimiser and schedule at each
    epochs: int  # the stage's length, for its learning-rate schedule
    early_stopping: bool  # whether patience may end the run during this stage


class Recipe:
    name: str

    def check(self, cfg: TrainConfig) -> None:
        """Raise ValueError with what to change when `cfg` cannot be trained this way."""

    def initialise(self, model: StagedModel, cfg: TrainConfig) -> None:
        """Set the starting weights of a new run (a resumed run loads its own)."""

    def stage_at(self, cfg: TrainConfig, epoch: int) -> Stage:
        raise NotImplementedError

    def param_groups(self, cfg: TrainConfig, model: StagedModel, stage: Stage) -> list[dict]:
        """The optimiser's parameter groups for `stage`; freezes what the stage does not train."""
        raise NotImplementedError


class FromScratch(Recipe):
    name = "from_scratch"

    def check(self, cfg: TrainConfig) -> None:
        if cfg.backbone_weights:
            raise ValueError("--recipe from_scratch starts from random weights, so --backbone-weights would be "
                             "ignored: drop it, or use --recipe two_stage to fine-tune those weights")
        if cfg.start_decay:
            raise ValueError("--start-decay pulls a fine-tuned trunk towards its pretrained weights, and "
                             "--recipe from_scratch has none: drop it, or use --recipe two_stage")

    def stage_at(self, cfg: TrainConfig, epoch: int) -> Stage:
        return Stage(1, cfg.epochs, early_stopping=True)

    def param_groups(self, cfg: TrainConfig, model: StagedModel, stage: Stage) -> list[dict]:
        return [{"params": list(model.parameters()), "lr": cfg.lr}]  # one group: everything trains from the start


class TwoStage(Recipe):
    name = "two_stage"

    def check(self, cfg: TrainConfig) -> None:
        if architecture(cfg.architecture).pretrained is None and not (cfg.backbone_weights or cfg.init_from):
            raise ValueError(f"--recipe two_stage fine-tunes pretrained weights, and {cfg.architecture} has none to "
                             "download: use --recipe from_scratch, or give --backbone-weights (a trained "
                             f"{cfg.architecture} model's model.safetensors)")
        if cfg.backbone_weights and not Path(cfg.backbone_weights).is_file():
            raise ValueError(f"--backbone-weights {cfg.backbone_weights} does not exist")
        if cfg.finetune_stages < 1:
            raise ValueError("--finetune-stages must be at least 1 (stage 2 trains the top stages)")

    def initialise(self, model: StagedModel, cfg: TrainConfig) -> None:
        load_pretrained(model, cfg.architecture, Path(cfg.backbone_weights) if cfg.backbone_weights else None)

    def stage_at(self, cfg: TrainConfig, epoch: int) -> Stage:
        if epoch < cfg.stage1_epochs:
            # A warm-up of the new heads on the frozen trunk: no early stop before fine-tuning starts.
            return Stage(1, cfg.stage1_epochs, early_stopping=False)
        return Stage(2, cfg.epochs - cfg.stage1_epochs, early_stopping=True)

    def param_groups(self, cfg: TrainConfig, model: StagedModel, stage: Stage) -> list[dict]:
        trainable = 0 if stage.number == 1 else min(cfg.finetune_stages, len(model.stages))
        model.set_trainable_stages(trainable)
        groups = [{"params": list(model.heads.parameters()), "lr": cfg.lr}]
        # Layer-wise decay: the stages nearest the input hold the most general features and move least.
        top = model.stages[len(model.stages) - trainable:] if trainable else []
        # With --start-decay the trunk decays towards where it started (L2-SP), not towards zero.
        trunk = {"start_decay": cfg.start_decay, "weight_decay": 0.0} if cfg.start_decay else {}
        for depth, block in enumerate(reversed(top)):
            groups.append({"params": list(block.parameters()), "lr": cfg.finetune_lr * cfg.layer_decay ** depth,
                           **trunk})
        return groups


class AdamWTowardsStart(torch.optim.AdamW):
    """AdamW whose decoupled weight decay pulls a group marked with `start_decay` towards each parameter's
    starting value instead of towards zero (L2-SP: Li, Grandvalet and Davoine, "Explicit inductive bias for
    transfer learning with convolutional networks", 2018): the fine-tuned trunk stays near the pretrained
    features it was chosen for, and may move as far as the faces really ask."""

    def __init__(self, groups: list[dict], start: dict[torch.Tensor, torch.Tensor], **kwargs) -> None:
        super().__init__(groups, **kwargs)
        self.start = start  # parameter -> its value at the start of training

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            pull = group.get("start_decay", 0.0) * group["lr"]
            if pull:
                for p in group["params"]:
                    if p.grad is not None:
                        p.lerp_(self.start[p], pull)  # p += pull * (start - p), as AdamW's decay does towards 0
        return super().step(closure)



RECIPES: dict[str, Recipe] = {r.name: r for r in (FromScratch(), TwoStage())}


def recipe_of(cfg: TrainConfig) -> Recipe:
    """The run's recipe, after checking that its settings make a run that can train."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown --recipe {cfg.recipe!r}; known: {', '.join(RECIPES)}")
    arch = architecture(cfg.architecture)
    if cfg.input_size < arch.min_input_size:
        raise ValueError(f"{cfg.architecture} needs an input of at least {arch.min_input_size} px, "
                         f"not --input-size {cfg.input_size}")
    if cfg.init_from:
        if cfg.backbone_weights:
            raise ValueError("--init-from and --backbone-weights both say where the weights start: keep one")
        if not Path(cfg.init_from).is_dir():
            raise ValueError(f"--init-from {cfg.init_from} is not a model folder (model.safetensors + config.json)")
    if cfg.distill_from and not (Path(cfg.distill_from) / "config.json").is_file():
        raise ValueError(f"--distill-from {cfg.distill_from} is not a model folder (model.safetensors + config.json)")
    if not 0.0 < cfg.distill_weight <= 1.0:
        raise ValueError(f"--distill-weight is the teacher's share of the loss, above 0 and at most 1, "
                         f"not {cfg.distill_weight}")
    recipe = RECIPES[cfg.recipe]
    recipe.check(cfg)
    return recipe


def make_optimizer(cfg: TrainConfig, model: StagedModel, stage: Stage, steps_per_epoch: int,
                   start: dict[torch.Tensor, torch.Tensor] | None = None):
    """AdamW over the recipe's groups for `stage`, with linear warm-up then cosine decay over the stage's steps;
    `start` (parameter -> its starting value) anchors the groups with a `start_decay` (--start-decay)."""
    groups = recipe_of(cfg).param_groups(cfg, model, stage)
    if any(group.get("start_decay") for group in groups):
        if start is None:
            raise ValueError("--start-decay needs the starting weights to pull towards")
        optimizer = AdamWTowardsStart(groups, start, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps = max(1, stage.epochs) * steps_per_epoch
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
