"""The model card: what a model is, how it was trained, what it measured on each data set, its limits.

Written by `training.push` beside the weights, on the Hub and in weights/. Each data set's
section, metric names and licence sentence come from its spec.
"""

from __future__ import annotations

import math

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from demo.checkpoint import ModelConfig
from training.data import spec
from training.data.spec import YEAR, DatasetSpec
from training.evaluation.markdown import table
from training.evaluation.report import breakdown_cells, headline

# How the card says a spread range is read (config.range_multiples_at), around the age shown ({}).
SPREAD_TEXT = {
    "estimate": "the {0} minus and plus multiples of the distribution's spread around it, the multiples fitted on "
                "validation faces by estimate",
    "age": "every year whose band of likely {0}s holds this one, a band being that year minus and plus multiples "
           "of the distribution's spread, the multiples fitted on validation faces by true age (a confidence belt: "
           "each true age gets its coverage)",
}
# What the card says of the model's test-time flip (config.flip), in calibration and in its results.
FLIP_TEXT = {
    "off": "",
    "on": " Each face is judged together with its mirror image and the two answers averaged (flip averaging, "
          "`flip` in `config.json`), in calibration and in the results below.",
    "gender": " Each face's gender is judged together with its mirror image and the two answers averaged (flip "
              "averaging of the gender answer, `flip` in `config.json`), in calibration and in the results below.",
}

# (metric type, name on the card, key in the metrics) per kind of age label, for the card's model-index.
CARD_METRICS = {
    "year": (("mae", "Age MAE (years)", "age_mae"), ("mae", "Age MAE, true ages 60+ (years)", "age_mae_60_plus"),
             ("cs5", "Age CS@5", "age_cs5"),
             ("coverage", "80% age range coverage", "age_range_coverage"),
             ("accuracy", "Gender accuracy", "gender_accuracy"),
             ("ece", "Gender expected calibration error", "gender_ece")),
    "group": (("accuracy", "Age group accuracy (exact)", "age_group_exact"),
              ("accuracy", "Age group accuracy (within one group)", "age_group_within_one"),
              ("coverage", "80% age range coverage (share of the group's years)", "age_range_coverage"),
              ("accuracy", "Gender accuracy", "gender_accuracy"),
              ("ece", "Gender expected calibration error", "gender_ece")),
}


def build_card(config: ModelConfig, metrics: dict | None, repo_id: str, trained_on: list[DatasetSpec],
               training: str | None = None) -> ModelCard:
    """The card of a model: `metrics` from training.evaluate (or None), `training` one sentence on its run."""
    evaluated = [spec.get(name) for name in spec.names() if metrics and name in metrics]
    eval_results = []
    for dataset in evaluated:
        overall = metrics[dataset.name]["overall"]
        for metric_type, name, key in CARD_METRICS[dataset.age_kind]:
            if not math.isfinite(overall.get(key, math.nan)):  # e.g. no face of 60+ in the split
                continue
            eval_results.append(EvalResult(
                task_type="image-classification", dataset_type=dataset.name,
                dataset_name=f"{dataset.title} ({metrics['split']} split)", metric_type=metric_type,
                metric_name=name, metric_value=round(float(overall[key]), 4),
            ))
    data = ModelCardData(
        library_name="pytorch", license="other", license_name="utkface-non-commercial",
        tags=["age-estimation", "gender-classification", "face", "safetensors"],
        datasets=[d.title for d in trained_on], model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )
    body = _card_body(config, metrics, evaluated, repo_id, training, trained_on)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + body)


def _card_body(config: ModelConfig, metrics: dict | None, evaluated: list[DatasetSpec], repo_id: str,
               training: str | None, trained_on: list[DatasetSpec]) -> str:
    titles = " and ".join(d.title for d in trained_on) or "the data sets named in train_config.json"
    lines = [
        f"# {config.name}", "",
        f"Age estimation and gender classification from a face crop. Architecture `{config.architecture}`, "
        f"input {config.input_size}x{config.input_size} px from a {config.crop_size} px face crop aligned with MTCNN "
        f"landmarks. The age head gives a distribution over years: the app shows its {config.age_estimate} "
        "(`age_estimate` in `config.json`) and its 80 % range"
        + (f" ({SPREAD_TEXT[config.range_multiples_at].format(config.age_estimate)}: `range_*` in `config.json`; "
           f"it always holds the age shown and is at most {config.range_max_width:g} years wide)"
           if config.range_kind == "spread" else "")
        + "; the gender head gives P(female)"
        + (f", shown as \"unsure\" where max(P(female), 1 - P(female)) is below {config.gender_unsure_below:.2f} "
           "(`gender_unsure_below`, chosen on validation)" if config.gender_unsure_below > 0.5 else "")
        + "." + FLIP_TEXT[config.flip], "",
        "## Use", "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from demo.checkpoint import load_model  # from this model's GitHub project",
        f"model = load_model(snapshot_download('{repo_id}'))",
        "```", "",
        "Preprocessing (crop, resize, normalisation) is described by `config.json`; `demo.faces` implements it.", "",
    ]
    if evaluated:
        for dataset in evaluated:
            lines += _results(metrics, dataset)
    else:
        lines += ["## Results", "", "Not evaluated yet: run `python -m training.evaluate` and push with --metrics.", ""]
    if training:
        lines += ["## Training", "", training, ""]
    caveats = "; ".join(d.caveat for d in trained_on if d.caveat)
    lines += [
        "## Training data and licence", "",
        " ".join([f"Trained on {titles}.", *(d.about for d in trained_on if d.about)]), "",
        "## Intended use and limits", "",
        "- For demonstrations, teaching and research on age and gender estimation; not for decisions about people "
        "(identity, access, eligibility, law enforcement or anything with legal or similar effect).",
        f"- Apparent age and binary gender as labelled in {titles}: the model says what a face looks like to "
        "the annotators, not a person's age or gender identity.",
        (f"- {caveats}; accuracy" if caveats else "- Accuracy")
        + " is lower for the groups with fewer images (see the breakdown above) and for profiles, "
        "occlusions, blur, make-up and heavy filters.",
    ]
    return "\n".join(lines) + "\n"


def _results(metrics: dict, dataset: DatasetSpec) -> list[str]:
    m = metrics[dataset.name]
    o = m["overall"]
    columns = headline(dataset, o)
    header = [column.removeprefix(f"{dataset.title} ") for column, _ in columns]
    cells = [cell for _, cell in columns]
    if dataset.age_kind == YEAR:
        header, cells = header + ["CPU ms/face"], cells + [f"{metrics['cpu_ms_per_face']:.1f}"]
    lines = [f"## Results on the {dataset.title} {metrics['split']} split ({o['n']} faces)", ""]
    if dataset.age_kind != YEAR:
        lines += [f"Age is scored by the {dataset.title} age group its estimate falls in.", ""]
    lines += [table(header, [cells]), ""]
    cells = breakdown_cells(dataset)
    for breakdown in dataset.breakdowns:
        rows = [[group, g["n"], *(fmt(g) for _, fmt in cells)] for group, g in m[breakdown.key].items()]
        header = ["group", "n", *(h for h, _ in cells)]
        lines += [f"### By {breakdown.title} ({dataset.title})", "", table(header, rows), ""]
    return lines
