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

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from demo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config

UPLOADED = (WEIGHTS_NAME, CONFIG_NAME, "train_config.json", "history.csv", "val_metrics.json")
DATASET = "UTKFace"


def model_metrics(metrics_path: Path | None, architecture: str) -> dict | None:
    """The entry for this model in a metrics.json written by training.evaluate."""
    if metrics_path is None or not metrics_path.is_file():
        return None
    for entry in json.loads(metrics_path.read_text()):
        if entry["architecture"] == architecture:
            return entry
    return None


# (metric type, name on the card, key in the metrics) per data set, for the card's model-index.
CARD_METRICS = {
    "utkface": (("mae", "Age MAE (years)", "age_mae"), ("cs5", "Age CS@5", "age_cs5"),
                ("coverage", "80% age range coverage", "age_range_coverage"),
                ("accuracy", "Gender accuracy", "gender_accuracy"),
                ("ece", "Gender expected calibration error", "gender_ece")),
    "fairface": (("accuracy", "Age group accuracy (exact)", "age_group_exact"),
                 ("accuracy", "Age group accuracy (within one group)", "age_group_within_one"),
                 ("accuracy", "Gender accuracy", "gender_accuracy"),
                 ("ece", "Gender expected calibration error", "gender_ece")),
}
TITLES = {"utkface": "UTKFace", "fairface": "FairFace"}


def build_card(folder: Path, metrics: dict | None, repo_id: str) -> ModelCard:
    config = read_config(folder)
    eval_results = []
    for dataset, entries in CARD_METRICS.items():
        if not metrics or dataset not in metrics:
            continue
        overall = metrics[dataset]["overall"]
        for metric_type, name, key in entries:
            eval_results.append(EvalResult(
                task_type="image-classification", dataset_type=dataset,
                dataset_name=f"{TITLES[dataset]} ({metrics['split']} split)", metric_type=metric_type,
                metric_name=name, metric_value=round(float(overall[key]), 4),
            ))
    trained_on = _trained_on(folder)
    data = ModelCardData(
        library_name="pytorch", license="other", license_name="utkface-non-commercial",
        tags=["age-estimation", "gender-classification", "face", "safetensors"],
        datasets=trained_on.split(" and "), model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )
    body = _card_body(config, metrics, repo_id, _training_summary(folder), trained_on)
    text = f"---\n{data.to_yaml()}\n---\n\n" + body
    return ModelCard(text)


def _training_summary(folder: Path) -> str | None:
    """One sentence on how the run went, from train_config.json and history.csv."""
    config_path, history_path = folder / "train_config.json", folder / "history.csv"
    if not (config_path.is_file() and history_path.is_file()):
        return None
    cfg = json.loads(config_path.read_text())
    with history_path.open() as f:
        rows = list(csv.DictReader(f))
    minutes = sum(float(r["seconds"]) for r in rows) / 60
    rate = sum(float(r["images_per_s"]) for r in rows) / len(rows)
    stages = ""
    if cfg["model"] == "b":
        stages = (f"; the backbone frozen for {cfg['stage1_epochs']} epoch(s), then fine-tuned at learning rate "
                  f"{cfg['finetune_lr']:g} for its top stage, {cfg.get('layer_decay', 1.0):g} times that for each "
                  "stage below")
    return (f"Trained for {len(rows)} epochs (batch {cfg['batch_size']}, input {cfg['input_size']} px, device "
            f"`{cfg['device']}`{', bf16 autocast' if cfg.get('amp') else ''}) in {minutes:.0f} minutes of training "
            f"steps, {rate:.0f} images/s on average{stages}; settings in `train_config.json`, per-epoch log in "
            "`history.csv`.")


def _trained_on(folder: Path) -> str:
    """The data sets the run was validated on (val_metrics.json has one entry per data set)."""
    path = folder / "val_metrics.json"
    sets = [TITLES[k] for k in json.loads(path.read_text()) if k in TITLES] if path.is_file() else []
    return " and ".join(sets or [DATASET])


def _card_body(config, metrics: dict | None, repo_id: str, training: str | None = None,
               trained_on: str = DATASET) -> str:
    lines = [
        f"# {config.name}", "",
        f"Age estimation and gender classification from a face crop. Architecture `{config.architecture}`, "
        f"input {config.input_size}x{config.input_size} px from a {config.crop_size} px face crop aligned with MTCNN "
        "landmarks. The age head gives a distribution over years: the app shows its mean and its 80 % range; "
        "the gender head gives P(female).", "",
        "## Use", "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from demo.checkpoint import load_model  # from this model's GitHub project",
        f"model = load_model(snapshot_download('{repo_id}'))",
        "```", "",
        "Preprocessing (crop, resize, normalisation) is described by `config.json`; `demo.faces` implements it.", "",
    ]
    if metrics:
        lines += _results(metrics)
    else:
        lines += ["## Results", "", "Not evaluated yet: run `python -m training.evaluate` and push with --metrics.", ""]
    if training:
        lines += ["## Training", "", training, ""]
    lines += [
        "## Training data and licence", "",
        f"Trained on {trained_on}. UTKFace (aligned and cropped faces, about 20,000 images, "
        "ages 1-116, labelled with age, binary gender and one of five ethnicity groups) is available for "
        "non-commercial research and education only, and so are these weights."
        + (" FairFace (Flickr photos in the wild, nine age groups, binary gender, seven race groups) is CC BY 4.0 "
           "(Karkkainen and Joo, 2021)." if "FairFace" in trained_on else ""), "",
        "## Intended use and limits", "",
        "- For demonstrations, teaching and research on age and gender estimation; not for decisions about people "
        "(identity, access, eligibility, law enforcement or anything with legal or similar effect).",
        f"- Apparent age and binary gender as labelled in {trained_on}: the model says what a face looks like to "
        "the annotators, not a person's age or gender identity.",
        "- UTKFace is mostly frontal, well lit and skewed towards White adults and young children"
        + ("; FairFace adds photos in the wild, balanced by race group, labelled with age groups only" if
           "FairFace" in trained_on else "")
        + "; accuracy is lower for the groups with fewer images (see the breakdown above) and for profiles, "
        "occlusions, blur, make-up and heavy filters.",
    ]
    return "\n".join(lines) + "\n"


def _results(metrics: dict) -> list[str]:
    lines = []
    if "utkface" in metrics:
        u = metrics["utkface"]
        o = u["overall"]
        lines += [
            f"## Results on the UTKFace {metrics['split']} split ({o['n']} faces)", "",
            "| age MAE | CS@5 | 80 % range coverage | gender accuracy | gender ECE | CPU ms/face |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {o['age_mae']:.2f} | {100 * o['age_cs5']:.1f} % | {100 * o['age_range_coverage']:.1f} % | "
            f"{100 * o['gender_accuracy']:.2f} % | {o['gender_ece']:.3f} | {metrics['cpu_ms_per_face']:.1f} |", "",
        ]
        cells = (("age MAE", lambda g: f"{g['age_mae']:.2f}"),
                 ("range coverage", lambda g: f"{100 * g['age_range_coverage']:.0f} %"),
                 ("gender accuracy", lambda g: f"{100 * g['gender_accuracy']:.1f} %"))
        lines += _breakdown("By age band", u["by_age_band"], cells)
        lines += _breakdown("By ethnicity", u["by_ethnicity"], cells)
    if "fairface" in metrics:
        f = metrics["fairface"]
        o = f["overall"]
        lines += [
            f"## Results on the FairFace {metrics['split']} split ({o['n']} faces)", "",
            "Age is scored by the FairFace age group its estimate falls in.", "",
            "| age group exact | within one group | gender accuracy | gender ECE |", "| --- | --- | --- | --- |",
            f"| {100 * o['age_group_exact']:.1f} % | {100 * o['age_group_within_one']:.1f} % | "
            f"{100 * o['gender_accuracy']:.2f} % | {o['gender_ece']:.3f} |", "",
        ]
        cells = (("age group exact", lambda g: f"{100 * g['age_group_exact']:.1f} %"),
                 ("within one", lambda g: f"{100 * g['age_group_within_one']:.1f} %"),
                 ("gender accuracy", lambda g: f"{100 * g['gender_accuracy']:.1f} %"))
        lines += _breakdown("By race group (FairFace)", f["by_race"], cells)
        lines += _breakdown("By age group (FairFace)", f["by_age_group"], cells)
    return lines


def _breakdown(title: str, groups: dict[str, dict], cells) -> list[str]:
    """A card section: one row per group with its count and each (header, format) cell."""
    lines = [f"### {title}", "", "| group | n | " + " | ".join(h for h, _ in cells) + " |",
             "|" + " --- |" * (len(cells) + 2)]
    lines += [f"| {group} | {g['n']} | " + " | ".join(fmt(g) for _, fmt in cells) + " |" for group, g in groups.items()]
    return [*lines, ""]


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
    card = build_card(folder, metrics, repo_id)
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
