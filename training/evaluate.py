"""Evaluate one or two trained models on a split: metrics JSON, figures and a Markdown report.

    python -m training.evaluate runs/model_a runs/model_b --data data/faces --split test --out reports/test

Each argument is a run folder or a model folder (weights/model_a). With two, the report puts them
side by side. Every data set in the pack is reported on its own: UTKFace by age in years (MAE,
CS@5, range coverage; by age band and ethnicity), FairFace by age group (the group the estimate
falls in, exact and within one; by race group and age group); gender accuracy and calibration for
both. Written to --out: metrics.json, report.md and PNG figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from demo.checkpoint import LoadedModel, load_model
from demo.heads import decode_age, gender_probability
from training import fairface, utkface
from training.dataset import FaceDataset, FacePack
from training.metrics import (
    Outputs,
    collect_outputs,
    cpu_ms_per_face,
    face_metrics,
    group_metrics,
    reliability_bins,
)
from training.records import DATASETS

log = logging.getLogger(__name__)

AGE_BANDS = ((1, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, 116))
TITLES = {"utkface": "UTKFace", "fairface": "FairFace"}


def band_name(band: tuple[int, int]) -> str:
    return f"{band[0]}+" if band[1] == 116 else f"{band[0]}-{band[1]}"


def _by(out: Outputs, masks: dict[str, np.ndarray], fn, loaded: LoadedModel) -> dict:
    c = loaded.config
    return {name: fn(out.subset(mask), c.age_min, c.age_temperature, c.gender_temperature, c.range_coverage)
            for name, mask in masks.items() if mask.any()}


def utkface_report(out: Outputs, loaded: LoadedModel) -> dict:
    age, race = out.age.numpy(), out.race.numpy()
    bands = {band_name(b): (age >= b[0]) & (age <= b[1]) for b in AGE_BANDS}
    races = {name: race == i for i, name in enumerate(utkface.RACES)}
    return {"overall": _by(out, {"all": np.ones(len(age), bool)}, face_metrics, loaded)["all"],
            "by_age_band": _by(out, bands, face_metrics, loaded),
            "by_ethnicity": _by(out, races, face_metrics, loaded)}


def fairface_report(out: Outputs, loaded: LoadedModel) -> dict:
    low, race = out.age_low.numpy(), out.race.numpy()
    groups = {name: low == lo for name, (lo, _) in fairface.AGE_GROUPS.items()}
    races = {name: race == i for i, name in enumerate(fairface.RACES)}
    return {"overall": _by(out, {"all": np.ones(len(low), bool)}, group_metrics, loaded)["all"],
            "by_race": _by(out, races, group_metrics, loaded),
            "by_age_group": _by(out, groups, group_metrics, loaded)}


def evaluate_model(loaded: LoadedModel, pack: FacePack, split: str, device: str, batch_size: int = 256,
                   limit: int | None = None) -> tuple[dict, Outputs]:
    """Metrics of one model on one split, per data set in the pack, and its raw outputs."""
    c = loaded.config
    ds = FaceDataset(pack, pack.indices(split, limit), c.input_size, c.mean, c.std)
    out = collect_outputs(loaded.model.to(device), DataLoader(ds, batch_size=batch_size, num_workers=0), device,
                          flip=c.flip)
    metrics: dict = {"model": c.name, "architecture": c.architecture, "input_size": c.input_size, "split": split,
                     "flip": c.flip}
    for d, name in enumerate(DATASETS):
        mask = (out.dataset == d).numpy()
        if mask.any():
            report = utkface_report if name == "utkface" else fairface_report
            metrics[name] = report(out.subset(mask), loaded)
    metrics.update(
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        weights_mb=round((loaded.folder / "model.safetensors").stat().st_size / 1e6, 2),
        cpu_ms_per_face=round(cpu_ms_per_face(loaded.model, c.input_size, flip=c.flip), 2),
        cpu_threads=torch.get_num_threads(),
    )
    return metrics, out


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


Result = tuple[dict, Outputs, LoadedModel]


def _only(results: list[Result], dataset: str) -> list[Result]:
    """Each model's results restricted to one data set's faces."""
    d = DATASETS.index(dataset)
    return [(m[dataset], out.subset(out.dataset == d), loaded) for m, out, loaded in results]


def _short(loaded: LoadedModel) -> str:
    return loaded.config.name.split(" (")[0]


def plot_age_scatter(results: list[Result], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 5), squeeze=False)
    for ax, (metrics, out, loaded) in zip(axes[0], results):
        c = loaded.config
        pred = decode_age(out.age_logits, c.age_min, c.age_temperature, c.range_coverage).mean.numpy()
        ax.scatter(out.age.numpy(), pred, s=4, alpha=0.3)
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="true age", ylabel="predicted age",
               title=f"{c.name}\nUTKFace MAE {metrics['overall']['age_mae']:.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(results: list[Result], key: str, metric: str, ylabel: str, title: str, path: Path) -> None:
    """One bar per group and model: `metric` of each group in `metrics[key]`."""
    import matplotlib.pyplot as plt

    groups = list(results[0][0][key])
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(9, 1.1 * len(groups)), 4))
    for i, (metrics, _, loaded) in enumerate(results):
        values = [metrics[key].get(g, {}).get(metric, np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=loaded.config.name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(results) - 1) / 2, groups, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
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


def plot_age_groups(results: list[Result], path: Path) -> None:
    """FairFace: confusion of true age group against the group of the estimate, per model."""
    import matplotlib.pyplot as plt

    names = fairface.GROUP_NAMES
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.4), squeeze=False)
    for ax, (metrics, out, loaded) in zip(axes[0], results):
        c = loaded.config
        pred = decode_age(out.age_logits, c.age_min, c.age_temperature, c.range_coverage).mean.tolist()
        p = np.array([fairface.age_group_of(a) for a in pred])
        t = np.array([fairface.age_group_of(a) for a in out.age_low.tolist()])
        matrix = np.array([[np.sum((t == i) & (p == j)) for j in range(len(names))] for i in range(len(names))])
        _matrix(ax, matrix, [n.replace("more than ", ">") for n in names])
        o = metrics["overall"]
        ax.set_title(f"{c.name}, FairFace age groups\nexact {o['age_group_exact']:.3f}, "
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


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def summary_rows(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: both data sets' headline numbers per model."""
    header = ["model"]
    present = [d for d in DATASETS if d in results[0][0]]
    if "utkface" in present:
        header += ["UTKFace MAE", "CS@5", "80 % range coverage", "gender acc.", "gender ECE"]
    if "fairface" in present:
        header += ["FairFace age group exact", "within one", "gender acc.", "gender ECE"]
    header += ["CPU ms/face", "parameters", "weights MB"]
    rows = []
    for m, _, _ in results:
        row = [m["model"]]
        if "utkface" in present:
            u = m["utkface"]["overall"]
            row += [f"{u['age_mae']:.2f}", _pct(u["age_cs5"]), _pct(u["age_range_coverage"]),
                    _pct(u["gender_accuracy"], 2), f"{u['gender_ece']:.3f}"]
        if "fairface" in present:
            f = m["fairface"]["overall"]
            row += [_pct(f["age_group_exact"]), _pct(f["age_group_within_one"]), _pct(f["gender_accuracy"], 2),
                    f"{f['gender_ece']:.3f}"]
        row += [f"{m['cpu_ms_per_face']:.1f}", f"{m['parameters'] / 1e6:.2f} M", f"{m['weights_mb']:.1f}"]
        rows.append(row)
    return header, rows


def _breakdown(results: list[Result], dataset: str, key: str) -> str:
    if dataset == "utkface":
        cells = (("MAE", lambda g: f"{g['age_mae']:.2f}"), ("coverage", lambda g: _pct(g["age_range_coverage"], 0)),
                 ("gender", lambda g: _pct(g["gender_accuracy"])))
    else:
        cells = (("exact", lambda g: _pct(g["age_group_exact"])),
                 ("within one", lambda g: _pct(g["age_group_within_one"])),
                 ("gender", lambda g: _pct(g["gender_accuracy"])))
    header = ["group", "n"] + [f"{_short(loaded)} {h}" for _, _, loaded in results for h, _ in cells]
    rows = []
    for group, first in results[0][0][dataset][key].items():
        row = [group, str(first["n"])]
        for m, _, _ in results:
            g = m[dataset][key][group]
            row += [fmt(g) for _, fmt in cells]
        rows.append(row)
    return _table(header, rows)


def write_report(results: list[Result], folders: list[Path], out_dir: Path, split: str, data: Path) -> str:
    present = [d for d in DATASETS if d in results[0][0]]
    counts = ", ".join(f"{results[0][0][d]['overall']['n']} {TITLES[d]}" for d in present)
    lines = [f"# Evaluation on the {split} split", "",
             f"Data: `{data}`; {counts} faces. Produced by `python -m training.evaluate`.", ""]
    header, rows = summary_rows(results)
    flips = {m["flip"] for m, _, _ in results}
    lines += ["## Summary", "", _table(header, rows), "",
              f"CPU time: one face, batch of one, median of 30 runs, {results[0][0]['cpu_threads']} threads"
              + (", including the mirror image (flip averaging)." if True in flips else "."), ""]
    curves = []
    for (_, _, loaded), folder in zip(results, folders):
        history = _history(folder)
        if history:
            name = f"curves_{loaded.config.architecture}.png"
            plot_learning_curves(history, loaded.config.name, out_dir / name)
            curves += [f"![learning curves of {loaded.config.name}]({name})", ""]
    if curves:
        lines += ["## Learning curves", "", *curves]
    if "utkface" in present:
        utk = _only(results, "utkface")
        plot_age_scatter(utk, out_dir / "age_scatter.png")
        plot_bars(utk, "by_age_band", "age_mae", "age MAE (years)", "UTKFace: age error by true age band",
                  out_dir / "age_error_by_band.png")
        plot_gender(utk, "UTKFace", out_dir / "gender.png")
        lines += ["## UTKFace", "", "![predicted vs true age](age_scatter.png)", "",
                  "![age error by age band](age_error_by_band.png)", "",
                  "![gender confusion and reliability](gender.png)", "",
                  "### By age band", "", _breakdown(results, "utkface", "by_age_band"), "",
                  "### By ethnicity", "", _breakdown(results, "utkface", "by_ethnicity"), ""]
    if "fairface" in present:
        ff = _only(results, "fairface")
        plot_age_groups(ff, out_dir / "fairface_age_groups.png")
        plot_bars(ff, "by_race", "gender_accuracy", "gender accuracy", "FairFace: gender accuracy by race group",
                  out_dir / "fairface_gender_by_race.png")
        plot_bars(ff, "by_race", "age_group_exact", "age group exact", "FairFace: age group exact by race group",
                  out_dir / "fairface_age_by_race.png")
        plot_gender(ff, "FairFace", out_dir / "fairface_gender.png")
        lines += ["## FairFace", "",
                  "Age is scored by the group the estimate falls in, exactly and within one group.", "",
                  "![age group confusion](fairface_age_groups.png)", "",
                  "![gender accuracy by race group](fairface_gender_by_race.png)", "",
                  "![age group exact by race group](fairface_age_by_race.png)", "",
                  "![gender confusion and reliability](fairface_gender.png)", "",
                  "### By race group", "", _breakdown(results, "fairface", "by_race"), "",
                  "### By age group", "", _breakdown(results, "fairface", "by_age_group"), ""]
    report = "\n".join(lines)
    (out_dir / "report.md").write_text(report)
    return report


def resolve_model_folder(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    raise SystemExit(f"{path} holds no config.json: pass a run folder or a model folder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="one or two run or model folders")
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, help="report folder (default: MODEL/eval_SPLIT)")
    parser.add_argument("--limit", type=int, help="evaluate only a fixed random N faces of the split")
    parser.add_argument("--flip", choices=["config", "on", "off"], default="config",
                        help="flip averaging: as the model's config says (default), or forced on or off")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    folders = [resolve_model_folder(p) for p in args.models]
    out_dir = args.out or folders[0] / f"eval_{args.split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pack = FacePack(args.data)
    results = []
    for folder in folders:
        loaded = load_model(folder, args.device)
        if args.flip != "config":
            loaded.config.flip = args.flip == "on"
        metrics, out = evaluate_model(loaded, pack, args.split, args.device, limit=args.limit)
        results.append((metrics, out, loaded))
        log.info("%s: %s", loaded.config.name, json.dumps({d: metrics[d]["overall"] for d in DATASETS if d in metrics}))
    (out_dir / "metrics.json").write_text(json.dumps([m for m, _, _ in results], indent=2) + "\n")
    write_report(results, folders, out_dir, args.split, args.data)
    print(f"report written to {out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
