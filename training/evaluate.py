"""Evaluate one or two trained models on a split: metrics JSON, figures and a Markdown report.

    python -m training.evaluate runs/model_a runs/model_b --data data/utkface --split test --out reports/test

Each argument is a run folder or a model folder (weights/model_a). With two, the report puts them
side by side. Written to --out: metrics.json, report.md and PNG figures.
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

from training.checkpoint import LoadedModel, load_model
from training.dataset import FaceDataset, FacePack
from training.heads import decode_age, gender_probability
from training.metrics import Outputs, collect_outputs, cpu_ms_per_face, face_metrics, reliability_bins
from training.utkface import RACES

log = logging.getLogger(__name__)

AGE_BANDS = ((1, 12), (13, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, 116))


def band_name(band: tuple[int, int]) -> str:
    return f"{band[0]}+" if band[1] == 116 else f"{band[0]}-{band[1]}"


def breakdown(out: Outputs, mask: np.ndarray, loaded: LoadedModel) -> dict:
    c = loaded.config
    sub = Outputs(*(t[torch.from_numpy(mask)] for t in
                    (out.age_logits, out.gender_logit, out.age, out.gender, out.race)))
    return face_metrics(sub, c.age_min, c.age_temperature, c.gender_temperature, c.range_coverage)


def evaluate_model(loaded: LoadedModel, pack: FacePack, split: str, device: str, batch_size: int = 256,
                   limit: int | None = None) -> tuple[dict, Outputs]:
    c = loaded.config
    ds = FaceDataset(pack, pack.indices(split, limit), c.input_size, c.mean, c.std)
    out = collect_outputs(loaded.model.to(device), DataLoader(ds, batch_size=batch_size, num_workers=0), device)
    age = out.age.numpy()
    race = out.race.numpy()
    metrics = {
        "model": c.name,
        "architecture": c.architecture,
        "input_size": c.input_size,
        "split": split,
        "overall": face_metrics(out, c.age_min, c.age_temperature, c.gender_temperature, c.range_coverage),
        "by_age_band": {band_name(b): breakdown(out, (age >= b[0]) & (age <= b[1]), loaded)
                        for b in AGE_BANDS if ((age >= b[0]) & (age <= b[1])).any()},
        "by_ethnicity": {name: breakdown(out, race == i, loaded) for i, name in enumerate(RACES) if (race == i).any()},
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "weights_mb": round((loaded.folder / "model.safetensors").stat().st_size / 1e6, 2),
        "cpu_ms_per_face": round(cpu_ms_per_face(loaded.model, c.input_size), 2),
        "cpu_threads": torch.get_num_threads(),
    }
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


def plot_age_scatter(results: list[tuple[dict, Outputs, LoadedModel]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 5), squeeze=False)
    for ax, (metrics, out, loaded) in zip(axes[0], results):
        c = loaded.config
        pred = decode_age(out.age_logits, c.age_min, c.age_temperature, c.range_coverage).mean.numpy()
        ax.scatter(out.age.numpy(), pred, s=4, alpha=0.3)
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="true age", ylabel="predicted age",
               title=f"{c.name}\nMAE {metrics['overall']['age_mae']:.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_error_by_band(results: list[tuple[dict, Outputs, LoadedModel]], path: Path) -> None:
    import matplotlib.pyplot as plt

    bands = list(results[0][0]["by_age_band"])
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (metrics, _, loaded) in enumerate(results):
        values = [metrics["by_age_band"][b]["age_mae"] for b in bands]
        ax.bar(np.arange(len(bands)) + i * width, values, width, label=loaded.config.name)
    ax.set_xticks(np.arange(len(bands)) + width * (len(results) - 1) / 2, bands)
    ax.set(xlabel="true age band", ylabel="age MAE (years)", title="Age error by age band")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gender(results: list[tuple[dict, Outputs, LoadedModel]], path: Path) -> None:
    """Confusion matrix and reliability diagram per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4.6 * len(results), 8.4), squeeze=False)
    for col, (metrics, out, loaded) in enumerate(results):
        c = loaded.config
        p = gender_probability(out.gender_logit, c.gender_temperature).numpy()
        y = out.gender.numpy()
        pred = (p >= 0.5).astype(int)
        matrix = np.array([[np.sum((y == t) & (pred == q)) for q in (0, 1)] for t in (0, 1)])
        ax = axes[0, col]
        ax.imshow(matrix, cmap="Blues")
        for t in (0, 1):
            for q in (0, 1):
                ax.text(q, t, str(matrix[t, q]), ha="center", va="center",
                        color="white" if matrix[t, q] > matrix.max() / 2 else "black")
        ax.set_xticks([0, 1], c.gender_labels)
        ax.set_yticks([0, 1], c.gender_labels)
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{c.name}\naccuracy {metrics['overall']['gender_accuracy']:.3f}")
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


def _fmt(m: dict) -> list[str]:
    return [f"{m['age_mae']:.2f}", f"{100 * m['age_cs5']:.1f} %", f"{100 * m['age_range_coverage']:.1f} %",
            f"{m['age_range_width']:.1f}", f"{100 * m['gender_accuracy']:.2f} %", f"{m['gender_ece']:.3f}"]


METRIC_HEADER = ["age MAE", "CS@5", "80 % range coverage", "range width (years)", "gender accuracy", "gender ECE"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(results: list[tuple[dict, Outputs, LoadedModel]], folders: list[Path], out_dir: Path,
                 split: str, data: Path) -> str:
    lines = [f"# Evaluation on the UTKFace {split} split", "",
             f"Data: `{data}`; {results[0][0]['overall']['n']} faces. Produced by `python -m training.evaluate`.", ""]
    rows = [[m["model"], *_fmt(m["overall"]), f"{m['cpu_ms_per_face']:.1f}", f"{m['parameters'] / 1e6:.2f} M",
             f"{m['weights_mb']:.1f}"] for m, _, _ in results]
    lines += ["## Summary", "", _table(["model", *METRIC_HEADER, "CPU ms/face", "parameters", "weights MB"], rows), "",
              f"CPU time: one face, batch of one, median of 30 runs, {results[0][0]['cpu_threads']} threads.", ""]
    lines += ["## Learning curves", ""]
    for (_, _, loaded), folder in zip(results, folders):
        history = _history(folder)
        if history:
            name = f"curves_{loaded.config.architecture}.png"
            plot_learning_curves(history, loaded.config.name, out_dir / name)
            lines += [f"![learning curves of {loaded.config.name}]({name})", ""]
    plot_age_scatter(results, out_dir / "age_scatter.png")
    plot_error_by_band(results, out_dir / "age_error_by_band.png")
    plot_gender(results, out_dir / "gender.png")
    lines += ["## Age", "", "![predicted vs true age](age_scatter.png)", "",
              "![age error by age band](age_error_by_band.png)", "",
              "## Gender", "", "![gender confusion and reliability](gender.png)", ""]
    for key, title in (("by_age_band", "By age band"), ("by_ethnicity", "By ethnicity")):
        lines += [f"## {title}", ""]
        header = ["group", "n"] + [f"{loaded.config.name.split(' (')[0]} {h}" for _, _, loaded in results
                                   for h in ("MAE", "coverage", "gender acc.")]
        rows = []
        for group in results[0][0][key]:
            row = [group, str(results[0][0][key][group]["n"])]
            for m, _, _ in results:
                g = m[key][group]
                row += [f"{g['age_mae']:.2f}", f"{100 * g['age_range_coverage']:.0f} %",
                        f"{100 * g['gender_accuracy']:.1f} %"]
            rows.append(row)
        lines += [_table(header, rows), ""]
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
    parser.add_argument("--limit", type=int, help="evaluate only the first N faces of the split")
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
        metrics, out = evaluate_model(loaded, pack, args.split, args.device, limit=args.limit)
        results.append((metrics, out, loaded))
        log.info("%s: %s", loaded.config.name, json.dumps(metrics["overall"]))
    (out_dir / "metrics.json").write_text(json.dumps([m for m, _, _ in results], indent=2) + "\n")
    write_report(results, folders, out_dir, args.split, args.data)
    print(f"report written to {out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
