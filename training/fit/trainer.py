"""The training loop: one `fit(cfg)` for every architecture and recipe, reading top to bottom.

RUN_DIR (cfg.out) ends up holding a model folder (model.safetensors + config.json, the best epoch
on the validation loss, with calibration fitted on validation), train_config.json, history.csv
(one row per epoch), val_metrics.json and resume.pt (the last finished epoch, for --resume).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from demo.checkpoint import ModelConfig, ModelLoadError, build_from_config, load_model, save_model
from demo.files import atomic_write
from demo.heads import decode_age
from training.data import spec
from training.data.dataset import FaceDataset, mixed_order
from training.data.pack import FacePack
from training.evaluation.metrics import (
    Outputs,
    collect_outputs,
    fit_age_adjustment,
    fit_age_range,
    fit_gender_temperature,
    fit_unsure_below,
    split_metrics,
)
from training.evaluation.ranges import cross_fitted, fit_spread_rule, range_table
from training.fit import distributed
from training.fit.config import TrainConfig
from training.fit.distill import Positioned, Teacher, teacher_for
from training.fit.gender_groups import GenderGroups
from training.fit.losses import age_density, inverse_sqrt_weights, multitask_loss
from training.fit.mixup import draw_mix
from training.fit.recipes import Stage, make_optimizer, recipe_of

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
CONFIG_NAME = "train_config.json"


@dataclass
class RunState:
    """What a run has done so far; saved in resume.pt after every epoch."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    best: float = math.inf  # the best validation loss so far (its model is the one saved)
    bad_epochs: int = 0  # epochs since the best, in the current stage
    history: list[dict] = field(default_factory=list)  # one row per finished epoch, as in history.csv

    def minutes(self, running: float = 0.0) -> float:
        """Minutes of training steps, all sessions together, plus `running` seconds of the current epoch."""
        return (sum(row["seconds"] for row in self.history) + running) / 60


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed the random draws of one process's epoch: augmentation, dropout, and the loader workers
    (seeded from the process's torch generator). Each process its own stream, or every process's
    k-th face would get the same flip, shift, jitter and dropout mask; each epoch its own, so a
    resumed run draws what an uninterrupted one would. One process (rank 0) draws the same every time.
    """
    seed_everything(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def fit(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train as `cfg` says (continuing the run in cfg.out with `resume`); returns the run folder.

    Under torchrun, every rank runs this same function (training.fit.distributed); rank 0 alone writes.
    """
    recipe = recipe_of(cfg)  # an invalid combination stops here, before any data is read
    ranks = distributed.start(cfg.cuda)
    try:
        return _fit(cfg, resume, recipe, ranks)
    finally:
        distributed.stop(ranks)


def _fit(cfg: TrainConfig, resume: bool, recipe, ranks: distributed.Ranks) -> Path:
    if cfg.batch_size % ranks.world:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must divide among {ranks.world} processes")
    if ranks.active and cfg.cuda:
        cfg = dataclasses.replace(cfg, device=f"cuda:{ranks.local_rank}")
    run_dir = Path(cfg.out)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mcfg = cfg.model_config()

    pack = FacePack(cfg.data)
    train_ds = FaceDataset(pack, pack.indices("train", cfg.train_limit or cfg.limit), cfg.input_size, mcfg.mean,
                           mcfg.std, cfg.augment, in_memory=cfg.crops_in_memory)
    # Each rank validates its share of the faces; the outputs are gathered (validate).
    val_ds = FaceDataset(pack, pack.indices("val", cfg.limit)[ranks.rank :: ranks.world], cfg.input_size, mcfg.mean,
                         mcfg.std, in_memory=cfg.crops_in_memory)
    val_loader = make_loader(cfg, val_ds)
    train_sets = pack.dataset[train_ds.indices]
    log.info("%d training (%s) and %d validation faces from %s; mix %s; %s, recipe %s%s", len(train_ds),
             ", ".join(f"{n} {name}" for name, n in count_by_set(train_sets).items()), len(val_ds), pack.path,
             cfg.mix or "natural", cfg.architecture, cfg.recipe,
             f"; {ranks.world} processes, {cfg.batch_size // ranks.world} faces a step each" if ranks.active else "")

    groups = GenderGroups.of(pack, train_ds.indices)
    extras = LossExtras(age_weight_table(cfg, mcfg, pack))
    if cfg.distill_from:
        extras = dataclasses.replace(extras, teacher=teacher_for(cfg.distill_from, pack, train_ds.indices,
                                                                 mcfg.num_age_bins, run_dir, cfg.device, ranks))
    drawn_from = Positioned(train_ds) if cfg.distill_from else train_ds  # a teacher's answers are by position
    model = build_from_config(mcfg) if resume else start_model(cfg, mcfg, recipe)  # (resumed: its weights below)
    begun = None  # --start-decay's anchor: the weights the run began from, made afresh when it resumes
    if cfg.start_decay:
        begun = dict((start_model(cfg, mcfg, recipe) if resume else model).named_parameters())
    if ranks.active and cfg.sync_bn and cfg.cuda:
        # BatchNorm statistics over the global batch, as one process computes them. (torch's SyncBatchNorm
        # runs on GPUs only: on the CPU each process keeps its own, over its share of the batch.)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    place_model(cfg, model)
    start = {p: torch.empty_like(p).copy_(begun[name]) for name, p in model.named_parameters()} if begun else None
    ema = make_ema(cfg, model)
    kept = model if ema is None else ema.module  # what is validated, saved and calibrated
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)

    state, stage, optimizer, scheduler, scaler = RunState(), None, None, None, make_scaler(cfg)
    if resume:
        saved = torch.load(run_dir / RESUME_NAME, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        state = RunState(**saved["state"])
        stage = recipe.stage_at(cfg, state.epoch)
        optimizer, scheduler = make_optimizer(cfg, model, stage, steps_per_epoch, start)
        if saved["stage"] == stage.number:  # else the run stopped at a stage's end: the next starts afresh
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved.get("scaler") or {})
        log.info("resumed %s after epoch %d", run_dir, state.epoch)
    forward = trainable_forward(cfg, model, ranks) if stage else None

    for epoch in range(state.epoch, cfg.epochs):
        if stage != recipe.stage_at(cfg, epoch):
            stage = recipe.stage_at(cfg, epoch)
            optimizer, scheduler = make_optimizer(cfg, model, stage, steps_per_epoch, start)
            forward = trainable_forward(cfg, model, ranks)  # DDP syncs what trains in this stage
            state.bad_epochs = 0
        seed_epoch(cfg.seed, epoch, ranks.rank)
        # The order of the faces is one for all processes (each takes its share of it).
        order = mixed_order(train_sets, cfg.mix, len(train_ds), torch.Generator().manual_seed(cfg.seed + epoch))
        if ranks.active:
            loader = make_loader(cfg, drawn_from, distributed.share(order, cfg.batch_size, ranks).tolist(),
                                 batch_size=cfg.batch_size // ranks.world, drop_last=False)
        else:
            loader = make_loader(cfg, drawn_from, order.tolist())
        gender_table = groups.weight_table(state.history[-1] if state.history else None, cfg.loss.gender_groups)
        if gender_table is not None:
            log.info("gender loss weights: %s", groups.describe(gender_table))
        extras = dataclasses.replace(extras, gender_table=gender_table)
        started = time.perf_counter()
        train_stats = train_epoch(cfg, model, forward, loader, optimizer, scheduler, mcfg, epoch, state, started,
                                  ranks, scaler, extras, ema, groups)
        seconds = time.perf_counter() - started
        val_loss, val_row = validate(cfg, kept, val_loader, mcfg, ranks)
        if ema is not None:  # the weights themselves too: one run measures what the average is worth
            raw_loss, raw_row = validate(cfg, model, val_loader, mcfg, ranks)
            val_row |= {"raw_val_loss": raw_loss} | {f"raw_{k}": v for k, v in raw_row.items()}
        images = train_stats.pop("images")
        drawn = {f"n_{name}": n for name, n in count_by_set(train_sets[order]).items()}
        row = {"epoch": epoch + 1, "stage": stage.number, "lr": optimizer.param_groups[0]["lr"], **train_stats,
               "val_loss": val_loss, **val_row, "seconds": round(seconds, 1),
               "images_per_s": round(images / seconds, 1), **drawn,
               **({"gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if cfg.cuda else {})}
        state.history.append(distributed.from_main(row, ranks))  # rank 0's clock counts for --max-minutes
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        state.epoch = epoch + 1
        if val_loss < state.best:
            state.best, state.bad_epochs = val_loss, 0
            if ranks.main:
                save_model(kept, mcfg, run_dir)  # SyncBatchNorm saves the tensors BatchNorm loads
        else:
            state.bad_epochs += 1
        if ranks.main:
            write_history(run_dir / "history.csv", state.history)
            save_resume(run_dir / RESUME_NAME, model, optimizer, scheduler, stage, state, scaler, ema)
        if stop_reason := should_stop(cfg, state, stage):
            log.info("stopping: %s", stop_reason)
            break

    if ranks.main:
        if ranks.active:  # rank 0 validated its share only; calibration wants every validation face
            val_loader = make_loader(cfg, FaceDataset(pack, pack.indices("val", cfg.limit), cfg.input_size,
                                                      mcfg.mean, mcfg.std, in_memory=cfg.crops_in_memory))
        calibrate(run_dir, val_loader, cfg, pack)
    return run_dir


def training_ages(cfg: TrainConfig, pack: FacePack) -> tuple[torch.Tensor, torch.Tensor]:
    """The age labels [low, high] of the run's training faces (those its FaceDataset draws from)."""
    train = pack.indices("train", cfg.train_limit or cfg.limit)
    return torch.from_numpy(pack.age_low[train]), torch.from_numpy(pack.age_high[train])


def age_weight_table(cfg: TrainConfig, mcfg: ModelConfig, pack: FacePack) -> torch.Tensor | None:
    """The per-year weights of the age loss that --age-reweight asks for, from the training faces' ages."""
    if cfg.loss.age_reweight == "none":
        return None
    low, high = training_ages(cfg, pack)
    density = age_density(low, high, mcfg.age_min, mcfg.num_age_bins, cfg.loss.age_sigma)
    table = inverse_sqrt_weights(density, low, high, mcfg.age_min)
    log.info("age loss weights (%s) at ages %s", cfg.loss.age_reweight,
             ", ".join(f"{a}: {table[a - mcfg.age_min]:.2f}" for a in (1, 5, 15, 25, 35, 50, 60, 70, 80, 90)))
    return table.to(cfg.device)


def start_model(cfg: TrainConfig, mcfg: ModelConfig, recipe) -> torch.nn.Module:
    """A new run's network with its starting weights: a trained model's (--init-from), or the recipe's."""
    model = build_from_config(mcfg)
    if cfg.init_from:
        load_trained(model, mcfg, Path(cfg.init_from))
    else:
        recipe.initialise(model, cfg)
    return model


def load_trained(model: torch.nn.Module, mcfg: ModelConfig, folder: Path) -> None:
    """Every weight (trunk and heads) from a trained model of the same network: --init-from."""
    try:
        trained = load_model(folder)
    except ModelLoadError as error:
        raise ValueError(f"--init-from: {error}") from None
    theirs = trained.config
    if (theirs.architecture, theirs.arch_kwargs, theirs.num_age_bins) != (mcfg.architecture, mcfg.arch_kwargs,
                                                                          mcfg.num_age_bins):
        raise ValueError(f"--init-from {folder} is a {theirs.architecture} {theirs.arch_kwargs}, not the "
                         f"{mcfg.architecture} {mcfg.arch_kwargs} this run trains")
    model.load_state_dict(trained.model.state_dict())
    log.info("started from every weight of %s (%s)", folder, theirs.name)


def trainable_forward(cfg: TrainConfig, model: torch.nn.Module, ranks: distributed.Ranks) -> torch.nn.Module:
    """What a training step calls: the model, in DDP under torchrun (its trainable parameters now), compiled if asked.

    The same parameters either way: checkpoints save `model`.
    """
    forward = distributed.wrap(model, ranks, cfg.cuda)
    return torch.compile(forward) if cfg.compile else forward


def should_stop(cfg: TrainConfig, state: RunState, stage: Stage) -> str | None:
    """Why the run ends after this epoch, or None to go on."""
    if cfg.max_steps is not None and state.step >= cfg.max_steps:
        return f"--max-steps {cfg.max_steps} reached"
    if cfg.max_minutes is not None and state.minutes() >= cfg.max_minutes:
        return f"--max-minutes {cfg.max_minutes:g} reached"
    if stage.early_stopping and state.bad_epochs >= cfg.patience:
        return f"no better validation loss for {cfg.patience} epochs"
    return None


def place_model(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Move `model` to the device and memory format of `cfg`, in place."""
    model.to(cfg.device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)


def make_loader(cfg: TrainConfig, dataset: FaceDataset, order: list[int] | None = None, batch_size: int | None = None,
                drop_last: bool | None = None) -> DataLoader:
    """Batches of `dataset` in `order` (training: full batches only) or in its own order (evaluation)."""
    batch_size = batch_size or cfg.batch_size
    if drop_last is None:
        drop_last = order is not None and len(dataset) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=order, drop_last=drop_last,
                      num_workers=cfg.num_workers, pin_memory=cfg.cuda)


def amp_dtype(cfg: TrainConfig) -> torch.dtype:
    """bf16 where the hardware has it (this CPU's AVX-512 BF16, GPUs from Ampere on); fp16 on older GPUs."""
    return torch.float16 if cfg.cuda and not torch.cuda.is_bf16_supported() else torch.bfloat16


def make_scaler(cfg: TrainConfig) -> torch.amp.GradScaler:
    """fp16's gradient scaler (small gradients would underflow without it); off, and a no-op, for bf16 and fp32."""
    return torch.amp.GradScaler("cuda", enabled=cfg.amp and amp_dtype(cfg) == torch.float16)


@dataclass(frozen=True)
class LossExtras:
    """What the training loss weighs faces by, or learns from, beyond their labels (each optional)."""

    age_table: torch.Tensor | None = None  # per-year weights of the age loss (--age-reweight: age_weight_table)
    gender_table: torch.Tensor | None = None  # data sets x races, weights of the gender loss (--gender-groups)
    teacher: Teacher | None = None  # a trained model's answers for each training face (--distill-from)


def train_step(cfg: TrainConfig, model: torch.nn.Module, batch, optimizer, scheduler, age_min: int,
               scaler: torch.amp.GradScaler | None = None, extras: LossExtras = LossExtras()):
    """One optimiser step on a FaceDataset batch (with each face's position last, when there is a teacher);
    returns the loss and both heads' outputs."""
    scaler = scaler or make_scaler(cfg)
    x, age_low, age_high, gender = (t.to(cfg.device, non_blocking=True) for t in batch[:4])
    race, dataset = batch[4], batch[5]
    gender_weights = extras.gender_table[dataset, race].to(cfg.device) if extras.gender_table is not None else None
    mix = draw_mix(cfg.mixup, cfg.mixup_years, age_low, age_high, age_min) if cfg.mixup else None
    if mix is not None:
        x = mix.lam * x + (1 - mix.lam) * x[mix.partner.to(x.device)]
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda" if cfg.cuda else "cpu", dtype=amp_dtype(cfg), enabled=cfg.amp):
        age_logits, gender_logit = model(x)

    def loss_on(faces: torch.Tensor | slice) -> torch.Tensor:
        """The loss on the labels (and teacher's answers) of the faces at `faces` (CPU): the batch's or partners'."""
        on = faces if isinstance(faces, slice) else faces.to(age_low.device)
        loss, _ = multitask_loss(age_logits, gender_logit, age_low[on], age_high[on], gender[on], age_min, cfg.loss,
                                 extras.age_table, None if gender_weights is None else gender_weights[on])
        if extras.teacher is not None:
            taught = extras.teacher.loss(batch[6][faces], age_logits, gender_logit)
            loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * taught
        return loss

    everyone = slice(None)
    loss = loss_on(everyone) if mix is None else mix.lam * loss_on(everyone) + (1 - mix.lam) * loss_on(mix.partner)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach(), age_logits.detach(), gender_logit.detach()


def train_epoch(cfg: TrainConfig, model: torch.nn.Module, forward: torch.nn.Module, loader: DataLoader, optimizer,
                scheduler, mcfg: ModelConfig, epoch: int, state: RunState, started: float,
                ranks: distributed.Ranks = distributed.ONE_PROCESS, scaler: torch.amp.GradScaler | None = None,
                extras: LossExtras = LossExtras(), ema: AveragedModel | None = None,
                groups: GenderGroups | None = None) -> dict:
    """One epoch (cut short by --max-steps or --max-minutes); `forward` is `model` in DDP and/or compiled.

    The running totals are summed over the ranks at the end: the history shows the global batch's.
    With `groups`, each (data set, race group)'s mean gender loss is among them.
    """
    model.train()
    scaler = scaler or make_scaler(cfg)
    # Running MAE over the faces labelled in years only (a group has no single true age).
    totals = {"loss": 0.0, "abs_err": 0.0, "years": 0, "correct": 0.0, "n": 0}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
               disable=not ranks.main)
    for batch in bar:
        loss, age_logits, gender_logit = train_step(cfg, forward, batch, optimizer, scheduler, mcfg.age_min, scaler,
                                                    extras)
        if ema is not None:
            ema.update_parameters(model)
        _, age_low, age_high, gender, race, dataset = batch[:6]
        state.step += 1
        with torch.no_grad():
            n = len(age_low)
            totals["n"] += n
            totals["loss"] += loss.item() * n
            year = age_low == age_high
            err = (decode_age(age_logits, mcfg.age_min).years.cpu() - age_low).abs()
            totals["abs_err"] += err[year].sum().item()
            totals["years"] += int(year.sum())
            totals["correct"] += ((gender_logit.cpu() > 0) == (gender == 1)).sum().item()
            if groups is not None:
                for key, value in groups.totals(gender_logit, gender, dataset, race).items():
                    totals[key] = totals.get(key, 0.0) + value
        n = totals["n"]
        bar.set_postfix(loss=f"{totals['loss'] / n:.3f}", mae=f"{totals['abs_err'] / max(1, totals['years']):.2f}",
                        acc=f"{totals['correct'] / n:.3f}")
        out_of_steps = cfg.max_steps is not None and state.step >= cfg.max_steps
        out_of_time = cfg.max_minutes is not None and state.minutes(time.perf_counter() - started) >= cfg.max_minutes
        if distributed.agree(out_of_steps or out_of_time, ranks):  # every rank stops at the same step
            break
    totals = distributed.summed(totals, ranks)
    n = max(1, totals["n"])
    mae = totals["abs_err"] / totals["years"] if totals["years"] else math.nan
    return {"train_loss": totals["loss"] / n, "train_mae": mae, "train_acc": totals["correct"] / n,
            "images": int(totals["n"]), **(groups.columns(totals) if groups is not None else {})}


def validate(cfg: TrainConfig, model: torch.nn.Module, loader: DataLoader, mcfg: ModelConfig,
             ranks: distributed.Ranks = distributed.ONE_PROCESS) -> tuple[float, dict]:
    """The validation loss, and the history columns: year MAE and group accuracy of the first such data sets.

    Under torchrun each rank runs its share of the faces and every rank gets all the outputs.
    """
    out = collect_outputs(model, loader, cfg.device, cfg.channels_last)
    out = Outputs(**distributed.gathered(vars(out), ranks))
    loss, _ = multitask_loss(out.age_logits, out.gender_logit, out.age_low, out.age_high, out.gender, mcfg.age_min,
                             cfg.loss)
    val = split_metrics(out, mcfg.age_min)
    year = next((m["age_mae"] for m in val.values() if "age_mae" in m), math.nan)
    group = next((m["age_group_exact"] for m in val.values() if "age_group_exact" in m), math.nan)
    acc = float(((out.gender_logit > 0) == (out.gender == 1)).float().mean())
    return float(loss), {"val_mae": year, "val_acc": acc, "val_group_exact": group}


def count_by_set(datasets: np.ndarray) -> dict[str, int]:
    return {name: int((datasets == d).sum()) for d, name in enumerate(spec.names()) if (datasets == d).any()}


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_resume(path: Path, model, optimizer, scheduler, stage: Stage, state: RunState,
                scaler: torch.amp.GradScaler | None = None, ema: AveragedModel | None = None) -> None:
    with atomic_write(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "stage": stage.number,
                    "state": dataclasses.asdict(state), "scaler": scaler.state_dict() if scaler else {},
                    **({"ema": ema.state_dict()} if ema is not None else {})}, tmp)


def make_ema(cfg: TrainConfig, model: torch.nn.Module) -> AveragedModel | None:
    """The exponential moving average of `model`'s weights and buffers (--ema), or None.

    Each step it becomes ema * itself + (1 - ema) * the weights; an average over the last few
    thousand steps is often a little better on held-out faces than the last step's weights, and
    steadier from epoch to epoch. Under torchrun every process keeps the same one (the weights are the same).
    """
    if not cfg.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)


def calibrate(run_dir: Path, val_loader: DataLoader, cfg: TrainConfig, pack: FacePack) -> dict:
    """Fit the age head's logit adjustment, its range, the gender temperature and the unsure threshold on
    validation, for the best checkpoint; write them into its config, and its validation metrics. The
    range's coverage is also measured cross-fitted (each face's range fitted on the other faces):
    "range_cross_fitted" in the metrics, what the range holds on faces it was not fitted on."""
    loaded = load_model(run_dir, cfg.device)
    mcfg = loaded.config
    mcfg.flip = cfg.flip  # the run's setting: a run recalibrated with --flip is served with it
    out = collect_outputs(loaded.model, val_loader, cfg.device, flip=mcfg.flip)
    # Fitted on the validation faces of every data set in the pack.
    log_density = training_log_density(cfg, mcfg, pack)
    tau = fit_age_adjustment(out, mcfg.age_min, log_density, cfg.age_adjust_tolerance, cfg.age_estimate)
    mcfg.age_logit_offsets = tuple((-tau * log_density).tolist()) if tau else ()
    out = dataclasses.replace(out, age_logits=mcfg.served_age_logits(out.age_logits))

    def fit_range(faces: Outputs):
        if cfg.range_rule == "percentiles":
            return fit_age_range(faces, mcfg.age_min, mcfg.range_coverage, sweeps=cfg.range_sweeps)
        return fit_spread_rule(faces, mcfg.age_min, mcfg.range_coverage, power=cfg.range_spread_power,
                               estimate=cfg.age_estimate,
                               multiples_at="age" if cfg.range_rule == "belt" else "estimate")

    mcfg.set_range_rule(fit_range(out))
    mcfg.gender_temperature = fit_gender_temperature(out)
    mcfg.gender_unsure_below = fit_unsure_below(out, mcfg.gender_temperature)
    save_model(loaded.model, mcfg, run_dir)
    metrics: dict = split_metrics(out, mcfg.age_min, mcfg.range_rule, mcfg.gender_temperature,
                                  mcfg.gender_unsure_below)
    metrics.update(age_adjustment=tau, range_kind=mcfg.range_kind, range_rule=dataclasses.asdict(mcfg.range_rule),
                   gender_temperature=mcfg.gender_temperature, gender_unsure_below=mcfg.gender_unsure_below,
                   range_cross_fitted=range_table(out, *cross_fitted(out, mcfg.age_min, fit_range), mcfg.age_min))
    (run_dir / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("validation after calibration: %s", json.dumps(metrics))
    return metrics


def training_log_density(cfg: TrainConfig, mcfg: ModelConfig, pack: FacePack) -> torch.Tensor:
    """Log of the training faces' smoothed age density (losses.age_density), centred; years no face
    is near count as a hundredth of the commonest, so that the adjustment stays bounded."""
    density = age_density(*training_ages(cfg, pack), mcfg.age_min, mcfg.num_age_bins, cfg.loss.age_sigma)
    log_density = density.clamp(min=float(density.max()) / 100).log()
    return log_density - log_density.mean()


def images_per_second(cfg: TrainConfig, pack: FacePack, steps: int, warmup: int, loader_only: bool = False) -> float:
    """Training images/s of `cfg` over `steps` timed steps of the trainer's own step, loader and augmentation.

    Every layer trainable (the last stage of the recipe: its slowest); weights start random, which
    speed does not depend on. With `loader_only`, batches are drawn and dropped.
    """
    torch.manual_seed(0)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mcfg = cfg.model_config()
    faces = pack.indices("train", (steps + warmup) * cfg.batch_size)
    dataset = FaceDataset(pack, faces, cfg.input_size, mcfg.mean, mcfg.std, cfg.augment,
                          in_memory=cfg.crops_in_memory)
    model = build_from_config(mcfg).train()
    place_model(cfg, model)
    last_stage = recipe_of(cfg).stage_at(cfg, cfg.epochs - 1)
    start = {p: p.detach().clone() for p in model.parameters()} if cfg.start_decay else None
    optimizer, scheduler = make_optimizer(cfg, model, last_stage, steps + warmup, start)
    forward = trainable_forward(cfg, model, distributed.ONE_PROCESS)
    loader = make_loader(cfg, dataset, list(range(len(dataset))))
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # a small set is gone through again
    images, started = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        batch = next(batches)
        images += len(batch[0]) if i >= warmup else 0
        if not loader_only:
            train_step(cfg, forward, batch, optimizer, scheduler, mcfg.age_min)
    return images / (time.perf_counter() - started)
