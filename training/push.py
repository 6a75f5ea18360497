"""Publish a trained model folder to the Hugging Face Hub with a model card of its measured metrics.

    python -m training.push runs/model_b --repo-id USER/age-gender-model-b --metrics reports/test/metrics.json --tag v1
    python -m training.push runs/model_b --repo-id USER/age-gender-model-b --dry-run --stage out/

Uploads model.safetensors, config.json, train_config.json, history.csv, val_metrics.json, the
test metrics and a README.md model card. --dry-run (with --stage) writes exactly those files to a
folder instead, so what would be uploaded can be read without a network.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard

from demo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config
from training.data import spec
from training.evaluation.card import build_card
from training.fit.config import TrainConfig

UPLOADED = (WEIGHTS_NAME, CONFIG_NAME, "train_config.json", "history.csv", "val_metrics.json")


def model_metrics(metrics_path: Path | None, architecture: str) -> dict | None:
    """The entry for this model in a metrics.json written by training.evaluate."""
    if metrics_path is None or not metrics_path.is_file():
        return None
    for entry in json.loads(metrics_path.read_text()):
        if entry["architecture"] == architecture:
            return entry
    return None


def training_summary(folder: Path) -> str | None:
    """One sentence on how the run went, from train_config.json and history.csv."""
    config_path, history_path = folder / "train_config.json", folder / "history.csv"
    if not (config_path.is_file() and history_path.is_file()):
        return None
    cfg = TrainConfig.from_dict(json.loads(config_path.read_text()))
    with history_path.open() as f:
        rows = list(csv.DictReader(f))
    minutes = sum(float(r["seconds"]) for r in rows) / 60
    rate = sum(float(r["images_per_s"]) for r in rows) / len(rows)
    stages = ""
    if cfg.recipe == "two_stage":
        frozen = f"the backbone frozen for {cfg.stage1_epochs} epoch(s), then " if cfg.stage1_epochs else ""
        stages = (f"; {frozen}fine-tuned at learning rate {cfg.finetune_lr:g} for its top stage, "
                  f"{cfg.layer_decay:g} times that for each stage below")
    start = (f"Started from every weight of `{cfg.init_from}` (a trained model of the same network) and trained"
             if cfg.init_from else "Trained")
    faces = ", ".join(f"{int(v):,} {spec.get(k.removeprefix('n_')).title}" for k, v in rows[-1].items()
                      if k.startswith("n_") and k.removeprefix("n_") in spec.names())
    reweight = "" if cfg.loss.age_reweight == "none" else f"; age loss reweighted by rarity ({cfg.loss.age_reweight})"
    val_path = folder / "val_metrics.json"
    tau = json.loads(val_path.read_text()).get("age_adjustment", 0) if val_path.is_file() else 0
    adjusted = (f" After training, the age head's logit adjustment (tau {tau:g}), its 80 % range and the gender "
                "temperature were fitted on the validation faces." if tau else "")
    return (f"{start} for {len(rows)} epochs of {faces} faces (batch {cfg.batch_size}, input {cfg.input_size} px, "
            f"device `{cfg.device}`{', bf16 autocast' if cfg.amp else ''}) in {minutes:.0f} minutes of training "
            f"steps, {rate:.0f} images/s on average{stages}{reweight}; settings in `train_config.json`, per-epoch "
            f"log in `history.csv`.{adjusted}")


def trained_on(folder: Path) -> list:
    """The data sets the run was validated on (val_metrics.json has one entry per data set)."""
    path = folder / "val_metrics.json"
    names = json.loads(path.read_text()) if path.is_file() else {}
    return [spec.get(name) for name in spec.names() if name in names]


def card_of(folder: Path, metrics: dict | None, repo_id: str) -> ModelCard:
    return build_card(read_config(folder), metrics, repo_id, trained_on(folder), training_summary(folder))


def stage_files(folder: Path, metrics: dict | None, card: ModelCard, stage: Path) -> list[Path]:
    stage.mkdir(parents=True, exist_ok=True)
    same = stage.resolve() == folder.resolve()  # staging in place: writes only the card
    staged = []
    for name in UPLOADED:
        if (folder / name).is_file():
            if not same:
                shutil.copy2(folder / name, stage / name)
            staged.append(stage / name)
    if metrics:
        (stage / "test_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        staged.append(stage / "test_metrics.json")
    card.save(stage / "README.md")
    staged.append(stage / "README.md")
    return staged


def push(folder: Path, repo_id: str, metrics_path: Path | None = None, private: bool = False,
         stage: Path | None = None, dry_run: bool = False, tag: str | None = None) -> list[Path]:
    """Stage the files and card, then (unless dry_run) upload them and tag the commit.

    The app loads a pinned revision (demo.sources.HUB_REVISION), so tag what it should serve.
    """
    config = read_config(folder)
    metrics = model_metrics(metrics_path, config.architecture)
    card = card_of(folder, metrics, repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage_files(folder, metrics, card, stage or Path(tmp))
        if not dry_run:
            import huggingface_hub

            api = huggingface_hub.HfApi()
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(folder_path=str(staged[0].parent), repo_id=repo_id, repo_type="model",
                              commit_message=f"Upload {config.name}")
            if tag:
                api.create_tag(repo_id, tag=tag, repo_type="model", exist_ok=True)
        return staged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="run folder or model folder")
    parser.add_argument("--repo-id", required=True, help="USER/NAME on the Hugging Face Hub")
    parser.add_argument("--metrics", type=Path, help="metrics.json from training.evaluate (test split)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--tag", help="tag the upload, e.g. v1 (the revision the app pins)")
    parser.add_argument("--dry-run", action="store_true", help="upload nothing; write the files to --stage")
    parser.add_argument("--stage", type=Path, help="folder to write the files to (kept)")
    args = parser.parse_args(argv)
    if args.dry_run and not args.stage:
        parser.error("--dry-run needs --stage FOLDER")
    if not (args.folder / WEIGHTS_NAME).is_file():
        raise SystemExit(f"{args.folder / WEIGHTS_NAME} not found")
    staged = push(args.folder, args.repo_id, args.metrics, args.private, args.stage, args.dry_run, args.tag)
    verb = "staged (not uploaded)" if args.dry_run else f"uploaded to https://huggingface.co/{args.repo_id}"
    print(f"{len(staged)} files {verb}: " + ", ".join(p.name for p in staged))


if __name__ == "__main__":
    main()
