"""Train Model A (from scratch) or Model B (pretrained backbone, two stages) on the packed crops.

    python -m training.train --model a --data data/faces --out runs/model_a
    python -m training.train --model b --data data/faces --out runs/model_b   # downloads ImageNet weights
    python -m training.train --model b ... --backbone-weights efficientnet-lite0-57934424.pth   # offline

The pack may hold UTKFace (ages in years) and FairFace (age groups); training draws from both,
in their natural proportions or in the shares given by --mix (recorded in train_config.json, and
the faces drawn from each set per epoch in history.csv).

RUN_DIR ends up holding a model folder (model.safetensors + config.json, the best epoch on the
validation loss, with calibration fitted on validation), train_config.json, history.csv (one
row per epoch), val_metrics.json and resume.pt (the last finished epoch, for --resume).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from demo.checkpoint import ModelConfig, build_from_config, save_model
from demo.faces import CROP_MARGIN, CROP_SIZE
from demo.heads import decode_age
from demo.models import NORMALISATION
from training.backbones import BackboneDownloadError, load_pretrained_backbone
from training.dataset import AugmentConfig, FaceDataset, FacePack, mixed_order
from training.losses import LossWeights, multitask_loss
from training.metrics import collect_outputs, fit_age_temperature, fit_gender_temperature, split_metrics
from training.records import DATASETS

log = logging.getLogger(__name__)

MODEL_DEFAULTS = {
    "a": {"architecture": "scratch_cnn", "input_size": 112, "name": "Model A (CNN from scratch)"},
    # dlib's face-recognition ResNet won the backbone contest (README, training.compare_backbones).
    "b": {"architecture": "dlib_resnet", "input_size": 128, "name": "Model B (transfer learning)"},
}
RESUME_NAME = "resume.pt"


@dataclass
class TrainConfig:
    """Every setting of a run; saved as RUN_DIR/train_config.json."""

    model: str = "a"
    data: str = "data/faces"
    mix: dict[str, float] = field(default_factory=dict)  # data set -> share of each epoch; {}: natural
    out: str = "runs/model_a"
    architecture: str = ""  # default: MODEL_DEFAULTS[model]
    input_size: int = 0  # default: MODEL_DEFAULTS[model]
    widths: tuple[int, ...] = (32, 64, 128, 256)  # Model A's trunk
    backbone_weights: str | None = None  # Model B: local ImageNet file; None downloads
    flip: bool = False  # average answers over the face and its mirror image (calibration and serving)
    epochs: int = 30
    stage1_epochs: int = 1  # Model B: epochs with the backbone frozen (a warm-up of the new heads)
    finetune_stages: int = 99  # Model B: top backbone stages trained in stage 2 (more than it has: all)
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 3e-4  # Model B, stage 2: learning rate of the top backbone stage
    layer_decay: float = 0.8  # Model B, stage 2: each stage below learns at this times the rate of the one above
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    dropout: float = 0.3
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patience: int = 6  # epochs without a better validation loss before stopping
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs)
    max_minutes: float | None = None  # stop training after this much wall-clock time (equal-budget contests)
    limit: int | None = None  # use only a fixed random N faces of each split
    train_limit: int | None = None  # use only a fixed random N training faces (validation stays whole)
    device: str = "auto"
    # Speed options; the README's speed table measures each on the CPU (training.speed).
    amp: bool = True  # bf16 autocast on CUDA, and on CPUs with native bf16 (off elsewhere: emulated, slow)
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward and backward
    threads: int = 0  # torch's intra-op threads; 0: torch's default (one per core)
    num_workers: int = -1  # -1: min(8, CPUs) on CUDA, 0 on the CPU (workers take cores from the arithmetic)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODEL_DEFAULTS:
            raise ValueError(f"--model must be a or b, not {self.model!r}")
        defaults = MODEL_DEFAULTS[self.model]
        self.architecture = self.architecture or defaults["architecture"]
        self.input_size = self.input_size or defaults["input_size"]
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.amp and not self.cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            log.info("bf16 autocast off: this CPU has no native bf16")
            self.amp = False
        if self.num_workers < 0:
            self.num_workers = min(8, os.cpu_count() or 1) if self.cuda else 0

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def model_config(self) -> ModelConfig:
        mean, std = NORMALISATION[self.architecture]
        arch_kwargs = {"dropout": self.dropout}
        if self.architecture == "scratch_cnn":
            arch_kwargs["widths"] = list(self.widths)
        tasks = tuple(t for t, w in (("age", self.loss.age), ("gender", self.loss.gender)) if w)
        return ModelConfig(
            name=MODEL_DEFAULTS[self.model]["name"], architecture=self.architecture, input_size=self.input_size,
            mean=mean, std=std, crop_size=CROP_SIZE, crop_margin=CROP_MARGIN, arch_kwargs=arch_kwargs, tasks=tasks,
            flip=self.flip,
        )

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["loss"] = LossWeights(**data.get("loss", {}))
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        data["widths"] = tuple(data.get("widths", cls.widths))
        return cls(**data)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stage_of(cfg: TrainConfig, epoch: int) -> int:
    """1: train everything (Model A) or the heads only (Model B); 2: Model B's fine-tuning."""
    return 2 if cfg.model == "b" and epoch >= cfg.stage1_epochs else 1


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, stage: int, steps_per_epoch: int):
    """AdamW with linear warm-up then cosine decay over the stage's steps."""
    if cfg.model == "b":
        model.set_trainable_stages(0 if stage == 1 else cfg.finetune_stages)
    if cfg.model == "a":  # one group: the whole network trains from the start
        groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    else:
        groups = [{"params": list(model.heads.parameters()), "lr": cfg.lr}]
    if cfg.model == "b" and stage == 2:
        # Layer-wise decay: the stages nearest the input hold the most general features and move least.
        trainable = model.stages[max(0, len(model.stages) - cfg.finetune_stages):]
        for depth, block in enumerate(reversed(trainable)):
            groups.append({"params": list(block.parameters()), "lr": cfg.finetune_lr * cfg.layer_decay ** depth})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if cfg.model == "b":
        epochs = cfg.stage1_epochs if stage == 1 else cfg.epochs - cfg.stage1_epochs
    else:
        epochs = cfg.epochs
    steps = max(1, epochs) * steps_per_epoch
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mcfg = cfg.model_config()

    pack = FacePack(cfg.data)
    train_ds = FaceDataset(pack, pack.indices("train", cfg.train_limit or cfg.limit), cfg.input_size, mcfg.mean,
                           mcfg.std, cfg.augment)
    val_ds = FaceDataset(pack, pack.indices("val", cfg.limit), cfg.input_size, mcfg.mean, mcfg.std)
    val_loader = make_loader(cfg, val_ds)
    train_sets = pack.dataset[train_ds.indices]
    log.info("%d training (%s) and %d validation faces from %s; mix %s", len(train_ds),
             ", ".join(f"{n} {name}" for name, n in _count_by_set(train_sets).items()), len(val_ds), pack.path,
             cfg.mix or "natural")

    model = build_from_config(mcfg)
    if cfg.model == "b" and not resume:
        load_pretrained_backbone(model, cfg.architecture, Path(cfg.backbone_weights) if cfg.backbone_weights else None)
    forward = place_model(cfg, model)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)

    state = {"epoch": 0, "step": 0, "best": math.inf, "bad_epochs": 0, "history": []}
    optimizer = scheduler = None
    stage = None
    if resume:
        saved = torch.load(run_dir / RESUME_NAME, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        state = saved["state"]
        stage = stage_of(cfg, state["epoch"])
        optimizer, scheduler = make_optimizer(cfg, model, stage, steps_per_epoch)
        if saved["stage"] == stage:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        log.info("resumed %s after epoch %d", run_dir, state["epoch"])

    for epoch in range(state["epoch"], cfg.epochs):
        if stage != stage_of(cfg, epoch):
            stage = stage_of(cfg, epoch)
            optimizer, scheduler = make_optimizer(cfg, model, stage, steps_per_epoch)
            state["bad_epochs"] = 0
        # Per-epoch seeds make a resumed run draw the same batches and augmentations.
        seed_everything(cfg.seed + epoch)
        order = mixed_order(train_sets, cfg.mix, len(train_ds), torch.Generator().manual_seed(cfg.seed + epoch))
        train_loader = make_loader(cfg, train_ds, order.tolist())
        started = state["epoch_started"] = time.perf_counter()
        train_stats = _train_epoch(cfg, model, forward, train_loader, optimizer, scheduler, mcfg, epoch, state)
        seconds = time.perf_counter() - started
        del state["epoch_started"]  # from here on the epoch counts through its history row
        val_out = collect_outputs(model, val_loader, cfg.device, cfg.channels_last)
        val_loss, _ = multitask_loss(val_out.age_logits, val_out.gender_logit, val_out.age_low, val_out.age_high,
                                     val_out.gender, mcfg.age_min, cfg.loss)
        val = split_metrics(val_out, mcfg.age_min)
        images = train_stats.pop("images")
        drawn = {f"n_{name}": n for name, n in _count_by_set(train_sets[order]).items()}
        row = {"epoch": epoch + 1, "stage": stage, "lr": optimizer.param_groups[0]["lr"], **train_stats,
               "val_loss": float(val_loss), "val_mae": val.get("utkface", {}).get("age_mae", math.nan),
               "val_acc": float(((val_out.gender_logit > 0) == (val_out.gender == 1)).float().mean()),
               "val_group_exact": val.get("fairface", {}).get("age_group_exact", math.nan),
               "seconds": round(seconds, 1), "images_per_s": round(images / seconds, 1), **drawn}
        state["history"].append(row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        state["epoch"] = epoch + 1
        if float(val_loss) < state["best"]:
            state["best"], state["bad_epochs"] = float(val_loss), 0
            save_model(model, mcfg, run_dir)
        else:
            state["bad_epochs"] += 1
        _write_history(run_dir / "history.csv", state["history"])
        _save_resume(run_dir / RESUME_NAME, model, optimizer, scheduler, stage, state)
        if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
            log.info("stopping: --max-steps %d reached", cfg.max_steps)
            break
        if _out_of_time(cfg, state):
            log.info("stopping: --max-minutes %g reached", cfg.max_minutes)
            break
        if state["bad_epochs"] >= cfg.patience and not (cfg.model == "b" and stage == 1):
            log.info("early stop: no better validation loss for %d epochs", cfg.patience)
            break

    calibrate(run_dir, val_loader, cfg)
    return run_dir


def place_model(cfg: TrainConfig, model: torch.nn.Module) -> torch.nn.Module:
    """Move `model` to the device and memory format of `cfg`, in place; return what to call for training steps.

    That is `model` itself, or its torch.compile form (same parameters: checkpoints save `model`).
    """
    model.to(cfg.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    return torch.compile(model) if cfg.compile else model


def make_loader(cfg: TrainConfig, dataset: FaceDataset, order: list[int] | None = None) -> DataLoader:
    """Batches of `dataset` in `order` (training: full batches only) or in its own order (evaluation)."""
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order,
                      drop_last=order is not None and len(dataset) > cfg.batch_size,
                      num_workers=cfg.num_workers, pin_memory=cfg.cuda)


def train_step(cfg: TrainConfig, model: torch.nn.Module, batch, optimizer, scheduler, age_min: int):
    """One optimiser step on a FaceDataset batch; returns the loss and both heads' outputs."""
    x, age_low, age_high, gender = (t.to(cfg.device, non_blocking=True) for t in batch[:4])
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda" if cfg.cuda else "cpu", dtype=torch.bfloat16, enabled=cfg.amp):
        age_logits, gender_logit = model(x)
    loss, _ = multitask_loss(age_logits, gender_logit, age_low, age_high, gender, age_min, cfg.loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.detach(), age_logits.detach(), gender_logit.detach()


def _train_epoch(cfg, model, forward, loader, optimizer, scheduler, mcfg, epoch, state) -> dict:
    """One epoch; `forward` is `model` or its compiled form (same parameters)."""
    model.train()
    # Running MAE over the faces labelled in years only (a group has no single true age).
    totals = {"loss": 0.0, "abs_err": 0.0, "years": 0, "correct": 0.0, "n": 0}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
    for batch in bar:
        loss, age_logits, gender_logit = train_step(cfg, forward, batch, optimizer, scheduler, mcfg.age_min)
        _, age_low, age_high, gender, _, _ = batch
        state["step"] += 1
        with torch.no_grad():
            n = len(age_low)
            totals["n"] += n
            totals["loss"] += loss.item() * n
            year = age_low == age_high
            err = (decode_age(age_logits, mcfg.age_min).mean.cpu() - age_low).abs()
            totals["abs_err"] += err[year].sum().item()
            totals["years"] += int(year.sum())
            totals["correct"] += ((gender_logit.cpu() > 0) == (gender == 1)).sum().item()
        n = totals["n"]
        bar.set_postfix(loss=f"{totals['loss'] / n:.3f}", mae=f"{totals['abs_err'] / max(1, totals['years']):.2f}",
                        acc=f"{totals['correct'] / n:.3f}")
        if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
            break
        if _out_of_time(cfg, state):
            break
    n = max(1, totals["n"])
    mae = totals["abs_err"] / totals["years"] if totals["years"] else math.nan
    return {"train_loss": totals["loss"] / n, "train_mae": mae, "train_acc": totals["correct"] / n,
            "images": totals["n"]}


def _out_of_time(cfg: TrainConfig, state: dict) -> bool:
    """True once the training steps of this run (all sessions together) have used --max-minutes."""
    if cfg.max_minutes is None:
        return False
    running = time.perf_counter() - state["epoch_started"] if "epoch_started" in state else 0.0
    spent = sum(row["seconds"] for row in state["history"]) + running
    return spent >= 60 * cfg.max_minutes


def _count_by_set(datasets: np.ndarray) -> dict[str, int]:
    return {name: int((datasets == d).sum()) for d, name in enumerate(DATASETS) if (datasets == d).any()}


def _write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def _save_resume(path: Path, model, optimizer, scheduler, stage: int, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "stage": stage, "state": state}, tmp)
    os.replace(tmp, path)


def calibrate(run_dir: Path, val_loader: DataLoader, cfg: TrainConfig) -> dict:
    """Fit both temperatures on validation for the best checkpoint; write them and its metrics."""
    from demo.checkpoint import load_model

    loaded = load_model(run_dir, cfg.device)
    mcfg = loaded.config
    out = collect_outputs(loaded.model, val_loader, cfg.device, flip=mcfg.flip)
    # Fitted on the validation faces of every data set in the pack.
    mcfg.age_temperature = fit_age_temperature(out, mcfg.age_min, mcfg.range_coverage)
    mcfg.gender_temperature = fit_gender_temperature(out)
    save_model(loaded.model, mcfg, run_dir)
    metrics: dict = split_metrics(out, mcfg.age_min, mcfg.age_temperature, mcfg.gender_temperature,
                                  mcfg.range_coverage)
    metrics.update(age_temperature=mcfg.age_temperature, gender_temperature=mcfg.gender_temperature)
    (run_dir / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("validation after calibration: %s", json.dumps(metrics))
    return metrics


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--model", choices=["a", "b"], required=True)
    p.add_argument("--data", default=d.data, help="folder written by training.prepare")
    p.add_argument("--mix", default="", help="share of each epoch per data set, e.g. utkface=0.6,fairface=0.4 "
                   "(default: natural proportions)")
    p.add_argument("--flip", action="store_true", help="average answers over each face and its mirror image")
    p.add_argument("--out", help="run folder (default runs/model_a or runs/model_b)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch "
                   "(with its saved settings; only --threads may change)")
    p.add_argument("--architecture", default="",
                   help="scratch_cnn (Model A); Model B: dlib_resnet, mobilenet_v2, efficientnet_lite0 or _lite2")
    p.add_argument("--input-size", type=int, default=0, help="model input side in pixels (crops are 128)")
    p.add_argument("--widths", default=",".join(map(str, d.widths)), help="Model A trunk widths, comma-separated")
    p.add_argument("--backbone-weights", help="local ImageNet weights file for Model B (else downloaded)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs)
    p.add_argument("--finetune-stages", type=int, default=d.finetune_stages)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr, help="Model B: top backbone stage's rate")
    p.add_argument("--layer-decay", type=float, default=d.layer_decay,
                   help="Model B: each backbone stage below the top learns at this times the rate above it")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--age-weight", type=float, default=1.0, help="0 trains gender alone")
    p.add_argument("--gender-weight", type=float, default=1.0, help="0 trains age alone")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-minutes", type=float, help="stop training after this many minutes of training steps")
    p.add_argument("--limit", type=int, help="use only a fixed random N faces of each split")
    p.add_argument("--train-limit", type=int, help="use only a fixed random N training faces (short runs)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-amp", action="store_true", help="train in fp32 (default: bf16 autocast where native)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = a.out or f"runs/model_{a.model}"
    if a.resume:
        saved = json.loads((Path(out) / "train_config.json").read_text())
        if a.threads:  # how fast, not what: a resumed run may get the cores another run has freed
            saved["threads"] = a.threads
        return TrainConfig.from_dict(saved), True
    cfg = TrainConfig(
        model=a.model, data=a.data, mix=parse_mix(a.mix), flip=a.flip, out=out, architecture=a.architecture,
        input_size=a.input_size,
        widths=tuple(int(w) for w in a.widths.split(",")), backbone_weights=a.backbone_weights, epochs=a.epochs,
        stage1_epochs=a.stage1_epochs, finetune_stages=a.finetune_stages, batch_size=a.batch_size, lr=a.lr,
        finetune_lr=a.finetune_lr, layer_decay=a.layer_decay, weight_decay=a.weight_decay, dropout=a.dropout,
        loss=LossWeights(age=a.age_weight, gender=a.gender_weight),
        augment=AugmentConfig(enabled=not a.no_augment), patience=a.patience, max_steps=a.max_steps,
        max_minutes=a.max_minutes, limit=a.limit, train_limit=a.train_limit, device=a.device, amp=not a.no_amp,
        channels_last=not a.no_channels_last, compile=a.compile, threads=a.threads, num_workers=a.workers, seed=a.seed,
    )
    return cfg, False


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        if name not in DATASETS or not share:
            raise SystemExit(f"--mix takes NAME=SHARE pairs with NAME in {', '.join(DATASETS)}, not {part!r}")
        mix[name] = float(share)
    return mix


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, resume = parse_args(argv)
    if resume and not (Path(cfg.out) / RESUME_NAME).is_file():
        raise SystemExit(f"nothing to resume: {Path(cfg.out) / RESUME_NAME} does not exist")
    try:
        run_dir = train(cfg, resume=resume)
    except (BackboneDownloadError, FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted; the last finished epoch is saved: add --resume to continue {cfg.out}") from None
    print(f"model written to {run_dir}")


if __name__ == "__main__":
    main()
