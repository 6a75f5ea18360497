"""Evaluate models on a split of a pack: metrics per data set, figures, and a Markdown report.

Every data set in the pack is reported on its own, as its spec says: faces labelled in years by
age (MAE, CS@5, range coverage), faces labelled with age groups by the group the estimate falls
in (exact and within one); gender accuracy and calibration for both; each broken down by the
spec's `breakdowns` (age band and ethnicity for UTKFace, race and age group for FairFace).
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from demo.checkpoint import LoadedModel
from demo.heads import decode_age, gender_probability
from training.data import spec
from training.data.dataset import FaceDataset
from training.data.pack import FacePack
from training.data.spec import YEAR, DatasetSpec
from training.evaluation.markdown import pct, table
from training.evaluation.metrics import (
    AGE_BREAKDOWNS,
    Outputs,
    collect_outputs,
    cpu_ms_per_face,
    dataset_metrics,
    reliability_bins,
)

Result = tuple[dict, Outputs, LoadedModel]  # one model's metrics, raw outputs and the model
RANGE_TARGET = (0.7, 0.9)  # what the 80 % range must hold in every band or group of AGE_BREAKDOWNS


def dataset_report(out: Outputs, dataset: DatasetSpec, loaded: LoadedModel) -> dict:
    """Overall metrics of one data set's faces, and per group of each of its breakdowns."""
    c = loaded.config

    def metrics(mask: np.ndarray) -> dict:
        return dataset_metrics(out.subset(mask), dataset, c.age_min, c.range_rule, c.gender_temperature,
                               c.gender_unsure_below)

    age_low, race = out.age_low.numpy(), out.race.numpy()
    report = {"overall": metrics(np.ones(len(age_low), bool))}
    for breakdown in dataset.breakdowns:
        groups = breakdown.groups(age_low, race)
        report[breakdown.key] = {name: metrics(mask) for name, mask in groups.items() if mask.any()}
    return report


def served_outputs(loaded: LoadedModel, pack: FacePack, split: str, device: str, batch_size: int = 256,
                   limit: int | None = None) -> Outputs:
    """One model's raw outputs on one split's faces, as the app reads them (its flip, its logit adjustment)."""
    c = loaded.config
    ds = FaceDataset(pack, pack.indices(split, limit), c.input_size, c.mean, c.std)
    out = collect_outputs(loaded.model.to(device), DataLoader(ds, batch_size=batch_size, num_workers=0), device,
                          flip=c.flip)
    return replace(out, age_logits=c.served_age_logits(out.age_logits))


def evaluate_model(loaded: LoadedModel, pack: FacePack, split: str, device: str, batch_size: int = 256,
                   limit: int | None = None) -> tuple[dict, Outputs]:
    """Metrics of one model on one split, per data set in the pack, and its raw outputs."""
    c = loaded.config
    out = served_outputs(loaded, pack, split, device, batch_size, limit)
    metrics: dict = {"model": c.name, "architecture": c.architecture, "input_size": c.input_size, "split": split,
                     "flip": c.flip}
    for d, name in enumerate(spec.names()):
        mask = (out.dataset == d).numpy()
        if mask.any():
            metrics[name] = dataset_report(out.subset(mask), spec.at(d), loaded)
    metrics.update(
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        weights_mb=round((loaded.folder / "model.safetensors").stat().st_size / 1e6, 2),
        cpu_ms_per_face=round(cpu_ms_per_face(loaded.model, c.input_size, flip=c.flip), 2),
        cpu_threads=torch.get_num_threads(),
    )
    return metrics, out


def datasets_in(results: list[Result]) -> list[DatasetSpec]:
    """The data sets the first model was evaluated on, in registry order."""
    return [spec.get(name) for name in spec.names() if name in results[0][0]]


def _history(folder: Path) -> list[dict] | None:
    path = folder / "history.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_learning_curves(history: list[dict], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (train_key, val_key, label) in zip(axes, (("train_loss", "val_loss", "loss"),
                                                      ("train_mae", "val_mae", "age MAE (years)"),
                                                      ("train_acc", "val_acc", "gender accuracy"))):
        ax.plot(epochs, [r[train_key] for r in history], "o-", label="train")
        ax.plot(epochs, [r[val_key] for r in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    stage2 = [r["epoch"] for r in history if r.get("stage") == 2]
    if stage2:
        for ax in axes:
            ax.axvline(stage2[0] - 0.5, color="grey", ls="--", lw=1)
        axes[0].text(stage2[0] - 0.4, axes[0].get_ylim()[1], "fine-tuning", va="top", fontsize=8, color="grey")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _only(results: list[Result], dataset: DatasetSpec) -> list[Result]:
    """Each model's results restricted to one data set's faces."""
    return [(m[dataset.name], out.of(dataset.name), loaded) for m, out, loaded in results]


def _short(loaded: LoadedModel) -> str:
    return loaded.config.name.split(" (")[0]


def _estimates(out: Outputs, loaded: LoadedModel) -> np.ndarray:
    c = loaded.config
    return decode_age(out.age_logits, c.age_min, c.range_rule).years.numpy()


def plot_age_scatter(results: list[Result], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 5), squeeze=False)
    for ax, (metrics, out, loaded) in zip(axes[0], results):
        ax.scatter(out.age.numpy(), _estimates(out, loaded), s=4, alpha=0.3)
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="true age", ylabel="predicted age",
               title=f"{loaded.config.name}\n{title} MAE {metrics['overall']['age_mae']:.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(results: list[Result], key: str, metric: str, ylabel: str, title: str, path: Path,
              target: tuple[float, float] | None = None) -> None:
    """One bar per group and model: `metric` of each group in `metrics[key]`; `target` shades where it should be."""
    import matplotlib.pyplot as plt

    groups = list(results[0][0][key])
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(9, 1.1 * len(groups)), 4))
    for i, (metrics, _, loaded) in enumerate(results):
        values = [metrics[key].get(g, {}).get(metric, np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=loaded.config.name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(results) - 1) / 2, groups, fontsize=8)
    if target:
        ax.axhspan(*target, color="green", alpha=0.12, label=f"target {target[0]:.0%}-{target[1]:.0%}")
    ax.set(ylabel=ylabel, title=title)
    if target:  # bars near 1 would hide under a legend inside the plot
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(results) + 1, fontsize=8)
    else:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gender(results: list[Result], title: str, path: Path) -> None:
    """Confusion matrix and reliability diagram per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4.6 * len(results), 8.4), squeeze=False)
    for col, (metrics, out, loaded) in enumerate(results):
        c = loaded.config
        p = gender_probability(out.gender_logit, c.gender_temperature).numpy()
        y = out.gender.numpy()
        pred = (p >= 0.5).astype(int)
        matrix = np.array([[np.sum((y == t) & (pred == q)) for q in (0, 1)] for t in (0, 1)])
        _matrix(axes[0, col], matrix, c.gender_labels)
        axes[0, col].set_title(f"{c.name}, {title}\naccuracy {metrics['overall']['gender_accuracy']:.3f}")
        ax = axes[1, col]
        points = [(conf, acc) for n, conf, acc in reliability_bins(p, y, bins=10) if n >= 5]
        ax.plot([0.5, 1], [0.5, 1], "k--", lw=1)
        ax.plot([c for c, _ in points], [a for _, a in points], "o-")
        ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0.5, 1), ylim=(0.5, 1),
               title=f"reliability (ECE {metrics['overall']['gender_ece']:.3f})")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_age_groups(results: list[Result], dataset: DatasetSpec, path: Path) -> None:
    """Confusion of true age group against the group of the estimate, per model."""
    import matplotlib.pyplot as plt

    names = list(dataset.age_groups)
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.4), squeeze=False)
    for ax, (metrics, out, loaded) in zip(axes[0], results):
        p = np.array([dataset.group_of(a) for a in _estimates(out, loaded)])
        t = np.array([dataset.group_of(a) for a in out.age_low.tolist()])
        matrix = np.array([[np.sum((t == i) & (p == j)) for j in range(len(names))] for i in range(len(names))])
        _matrix(ax, matrix, [n.replace("more than ", ">") for n in names])
        o = metrics["overall"]
        ax.set_title(f"{loaded.config.name}, {dataset.title} age groups\nexact {o['age_group_exact']:.3f}, "
                     f"within one {o['age_group_within_one']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _matrix(ax, matrix: np.ndarray, labels) -> None:
    ax.imshow(matrix, cmap="Blues")
    for t in range(len(matrix)):
        for q in range(len(matrix)):
            ax.text(q, t, str(matrix[t, q]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[t, q] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")


def headline(dataset: DatasetSpec, overall: dict) -> list[tuple[str, str]]:
    """(column, cell) pairs of a data set's headline numbers, as the summary table and the card show them."""
    o = overall
    ranges = [("80 % range coverage", pct(o["age_range_coverage"])),
              ("range width", f"{o['age_range_width']:.1f}"),
              ("ranges 40+ years wide", pct(o.get("age_range_wide_share", math.nan)))]
    gender = [("gender acc.", pct(o["gender_accuracy"], 2)), ("gender unsure", pct(o.get("gender_unsure_share", 0.0))),
              ("gender acc. when sure", pct(o.get("gender_accuracy_sure", o["gender_accuracy"]), 2)),
              ("gender ECE", f"{o['gender_ece']:.3f}")]
    if dataset.age_kind == YEAR:
        return [(f"{dataset.title} age MAE", f"{o['age_mae']:.2f}"), ("CS@5", pct(o["age_cs5"])),
                ("MAE 60+", f"{o.get('age_mae_60_plus', math.nan):.2f}"), *ranges, *gender]
    return [(f"{dataset.title} age group exact", pct(o["age_group_exact"])),
            ("within one", pct(o["age_group_within_one"])), *ranges, *gender]


def breakdown_cells(dataset: DatasetSpec) -> tuple[tuple[str, object], ...]:
    """(header, format) of each cell of a breakdown row, as the report and the card show them."""
    if dataset.age_kind == YEAR:
        return (("age MAE", lambda g: f"{g['age_mae']:.2f}"),
                ("signed error", signed_cell),
                ("range coverage", lambda g: pct(g["age_range_coverage"], 0)),
                ("range width", lambda g: f"{g['age_range_width']:.1f}"),
                ("gender accuracy", lambda g: pct(g["gender_accuracy"])))
    return (("age group exact", lambda g: pct(g["age_group_exact"])),
            ("within one", lambda g: pct(g["age_group_within_one"])),
            ("signed error", signed_cell),
            ("range coverage", lambda g: pct(g["age_range_coverage"], 0)),
            ("range width", lambda g: f"{g['age_range_width']:.1f}"),
            ("gender accuracy", lambda g: pct(g["gender_accuracy"])))


def signed_cell(metrics: dict) -> str:
    """A table cell of the mean estimate less the labelled age (metrics.signed_error): "+4.3", made older; blank
    for metrics without it (reports from before it, a group with no faces)."""
    value = metrics.get("age_signed_error", math.nan)
    return "" if math.isnan(value) else f"{value:+.1f}"


def summary_rows(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: every data set's headline numbers per model."""
    present = datasets_in(results)
    header = ["model"]
    for dataset in present:
        header += [column for column, _ in headline(dataset, results[0][0][dataset.name]["overall"])]
    header += ["CPU ms/face", "parameters", "weights MB"]
    rows = []
    for m, _, _ in results:
        row = [m["model"]]
        for dataset in present:
            row += [cell for _, cell in headline(dataset, m[dataset.name]["overall"])]
        row += [f"{m['cpu_ms_per_face']:.1f}", f"{m['parameters'] / 1e6:.2f} M", f"{m['weights_mb']:.1f}"]
        rows.append(row)
    return header, rows


def _breakdown(results: list[Result], dataset: DatasetSpec, key: str) -> str:
    cells = breakdown_cells(dataset)
    header = ["group", "n"] + [f"{_short(loaded)} {h}" for _, _, loaded in results for h, _ in cells]
    rows = []
    for group, first in results[0][0][dataset.name][key].items():
        row = [group, str(first["n"])]
        for m, _, _ in results:
            g = m[dataset.name][key][group]
            row += [fmt(g) for _, fmt in cells]
        rows.append(row)
    return table(header, rows)


def dataset_section(results: list[Result], dataset: DatasetSpec, out_dir: Path) -> list[str]:
    """A data set's figures (written to out_dir) and tables, as report lines."""
    mine, name, title = _only(results, dataset), dataset.name, dataset.title
    first = dataset.breakdowns[0] if dataset.breakdowns else None
    lines = [f"## {title}", ""]
    if dataset.age_kind == YEAR:
        plot_age_scatter(mine, title, out_dir / f"{name}_age_scatter.png")
        lines += [f"![predicted vs true age]({name}_age_scatter.png)", ""]
        if first:
            plot_bars(mine, first.key, "age_mae", "age MAE (years)", f"{title}: age error by {first.title}",
                      out_dir / f"{name}_age_error.png")
            lines += [f"![age error by {first.title}]({name}_age_error.png)", ""]
    else:
        lines += ["Age is scored by the group the estimate falls in, exactly and within one group.", ""]
        plot_age_groups(mine, dataset, out_dir / f"{name}_age_groups.png")
        lines += [f"![age group confusion]({name}_age_groups.png)", ""]
        if first:
            plot_bars(mine, first.key, "gender_accuracy", "gender accuracy",
                      f"{title}: gender accuracy by {first.title}", out_dir / f"{name}_gender_by_group.png")
            plot_bars(mine, first.key, "age_group_exact", "age group exact",
                      f"{title}: age group exact by {first.title}", out_dir / f"{name}_age_by_group.png")
            lines += [f"![gender accuracy by {first.title}]({name}_gender_by_group.png)", "",
                      f"![age group exact by {first.title}]({name}_age_by_group.png)", ""]
    plot_gender(mine, title, out_dir / f"{name}_gender.png")
    lines += [f"![gender confusion and reliability]({name}_gender.png)", ""]
    by_age = next((b for b in dataset.breakdowns if b.key in AGE_BREAKDOWNS), None)
    if by_age:
        plot_bars(mine, by_age.key, "age_range_coverage", "share of true ages in the range",
                  f"{title}: 80 % range coverage by {by_age.title}", out_dir / f"{name}_range_coverage.png",
                  target=RANGE_TARGET)
        lines += [f"![80 % range coverage by {by_age.title}]({name}_range_coverage.png)", ""]
    for breakdown in dataset.breakdowns:
        lines += [f"### By {breakdown.title}", "", _breakdown(results, dataset, breakdown.key), ""]
    return lines


def write_report(results: list[Result], folders: list[Path], out_dir: Path, split: str, data: Path) -> str:
    present = datasets_in(results)
    counts = ", ".join(f"{results[0][0][d.name]['overall']['n']} {d.title}" for d in present)
    lines = [f"# Evaluation on the {split} split", "",
             f"Data: `{data}`; {counts} faces. Produced by `python -m training.evaluate`.", ""]
    header, rows = summary_rows(results)
    flips = {m["flip"] for m, _, _ in results} - {"off"}
    lines += ["## Summary", "", table(header, rows), "",
              f"CPU time: one face, batch of one, median of 30 runs, {results[0][0]['cpu_threads']} threads"
              + (", including the mirror image (flip averaging)." if flips else "."), ""]
    curves = []
    architectures = [loaded.config.architecture for _, _, loaded in results]
    for i, ((_, _, loaded), folder) in enumerate(zip(results, folders)):
        history = _history(folder)
        if history:  # one figure a model: numbered where runs of one architecture are compared
            arch = loaded.config.architecture
            name = f"curves_{arch}.png" if architectures.count(arch) == 1 else f"curves_{i + 1}_{arch}.png"
            plot_learning_curves(history, loaded.config.name, out_dir / name)
            curves += [f"![learning curves of {loaded.config.name}]({name})", ""]
    if curves:
        lines += ["## Learning curves", "", *curves]
    for dataset in present:
        lines += dataset_section(results, dataset, out_dir)
    report = "\n".join(lines)
    (out_dir / "report.md").write_text(report)
    return report
