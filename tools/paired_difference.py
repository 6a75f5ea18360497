"""Whether a candidate beats a baseline by more than chance: differences on the same faces, with standard errors.

    python -m tools.paired_difference weights/model_b runs/r6_b_born runs/r6_b_mixup --data data/faces

The first model is the baseline. Each model's answers are read as the app serves them (its flip,
logit adjustment and estimate) on the same validation faces, and each number is the candidate's less the
baseline's, +- the standard error of the mean of the per-face differences: the faces both models
find hard or easy cancel out, so this error is smaller than either number's own. A difference
within about two standard errors is not a finding. Numbers: UTKFace age MAE (all faces and 60+)
and gender accuracy; FairFace exact age group and gender accuracy, overall and for the baseline's
worst race group. Prints a Markdown table.
"""

from __future__ import annotations

import numpy as np

from demo.checkpoint import ModelConfig
from demo.heads import decode_age
from tools.side_by_side import parse_models, served_on_split
from training.data import spec
from training.evaluation.markdown import table
from training.evaluation.metrics import OLD_AGE, Outputs


def per_face(out: Outputs, config: ModelConfig) -> dict[str, np.ndarray]:
    """Each face's age error in years, whether its age group is right, and whether its gender is right, of the
    answers as `config` reads them (its estimate: the mean or the median)."""
    age = decode_age(out.age_logits, config.age_min, config.range_rule).years.numpy()
    groups = np.zeros(len(age), dtype=bool)
    for d in np.unique(out.dataset.numpy()):
        dataset, on = spec.at(int(d)), (out.dataset == int(d)).numpy()
        if dataset.age_groups:
            groups[on] = dataset.groups_apart(age[on], out.age_low[on].tolist()) == 0
    return {"error": np.abs(age - out.age_low.numpy()), "group_right": groups,
            "gender_right": (out.gender_logit.numpy() > 0) == (out.gender.numpy() == 1)}


def difference(candidate: np.ndarray, baseline: np.ndarray, scale: float = 1.0) -> str:
    """The mean per-face difference +- its standard error, times `scale` (100 for points of accuracy); empty
    under two faces."""
    d = (candidate.astype(float) - baseline.astype(float)) * scale
    if len(d) < 2:
        return ""
    return f"{d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f}"


def columns(out: Outputs, baseline: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, str, float]]:
    """The numbers compared: (title, faces, per-face key, scale)."""
    utk, ff = spec.index("utkface"), spec.index("fairface")
    year = (out.dataset == utk).numpy()
    group = (out.dataset == ff).numpy()
    races = spec.get("fairface").races
    accuracy = {r: baseline["gender_right"][group & (out.race == i).numpy()].mean() for i, r in enumerate(races)
                if (group & (out.race == i).numpy()).any()}
    worst = min(accuracy, key=accuracy.get)
    return [("UTKFace MAE", year, "error", 1.0), ("60+", year & (out.age_low >= OLD_AGE).numpy(), "error", 1.0),
            ("UTKFace gender (points)", year, "gender_right", 100.0),
            ("FairFace exact (points)", group, "group_right", 100.0),
            ("FairFace gender (points)", group, "gender_right", 100.0),
            (f"FairFace gender, {worst} (points)", group & (out.race == races.index(worst)).numpy(), "gender_right",
             100.0)]


def main(argv: list[str] | None = None) -> None:
    args = parse_models(argv, __doc__, "the baseline, then one or more candidates",
                        "give a baseline and at least one candidate")
    served = served_on_split(args.models, args.data, args.split)
    outputs = [out for _, out in served]
    answers = [per_face(out, loaded.config) for loaded, out in served]
    cols = columns(outputs[0], answers[0])  # the faces are the same for every model
    rows = [[folder.name, *(difference(a[key][faces], answers[0][key][faces], scale) for _, faces, key, scale in cols)]
            for folder, a in zip(args.models[1:], answers[1:])]
    print(f"Each candidate less {args.models[0].name} on the {args.split} faces (+- one standard error):\n")
    print(table(["model", *(title for title, *_ in cols)], rows))


if __name__ == "__main__":
    main()
