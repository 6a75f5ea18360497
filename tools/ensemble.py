"""What averaging several models' answers would buy, on validation faces: each model alone, then every
combination of two or more, their age distributions and P(female) averaged.

    python -m tools.ensemble weights/model_b runs/r6_b runs/r6_b2 --data data/faces

Each model's answers are read as the app serves them (its flip, logit adjustment and gender temperature);
the averaged ones are scored without a range (no rule has been fitted to them). Prints a Markdown
table: UTKFace age MAE, MAE at 60+ and gender accuracy; FairFace age group exact, within one and
gender accuracy. (An average of k models costs k models' time a face.)
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import torch

from tools.side_by_side import parse_models, served_on_split
from training.evaluation.markdown import pct, table
from training.evaluation.metrics import Outputs, split_metrics


def averaged(outputs: list[Outputs], temperatures: list[float]) -> Outputs:
    """One Outputs whose answers are the mean of the members' age distributions and P(female)."""
    probs = torch.stack([torch.softmax(o.age_logits.float(), dim=-1) for o in outputs]).mean(dim=0)
    p_female = torch.stack([torch.sigmoid(o.gender_logit.float() / t) for o, t in zip(outputs, temperatures)])
    return replace(outputs[0], age_logits=probs.log(), gender_logit=torch.logit(p_female.mean(dim=0), eps=1e-6))


def row(name: str, out: Outputs, age_min: int) -> list[str]:
    m = split_metrics(out, age_min)
    u, f = m["utkface"], m["fairface"]
    return [name, f"{u['age_mae']:.2f}", f"{u['age_mae_60_plus']:.2f}", pct(u["gender_accuracy"]),
            pct(f["age_group_exact"]), pct(f["age_group_within_one"]), pct(f["gender_accuracy"])]


def main(argv: list[str] | None = None) -> None:
    args = parse_models(argv, __doc__, "two or more run or model folders", "give two or more models")
    served = served_on_split(args.models, args.data, args.split)
    outputs = [out for _, out in served]
    temperatures = [loaded.config.gender_temperature for loaded, _ in served]
    names = [folder.name for folder in args.models]
    age_mins = {loaded.config.age_min for loaded, _ in served}
    if len(age_mins) > 1 or len({o.age_logits.shape[-1] for o in outputs}) > 1:
        raise SystemExit("the models' age bins differ: their distributions cannot be averaged")
    age_min = age_mins.pop()
    rows = [row(n, o, age_min) for n, o in zip(names, outputs)]
    for k in range(2, len(names) + 1):
        for members in itertools.combinations(range(len(names)), k):
            rows.append(row(" + ".join(names[i] for i in members),
                            averaged([outputs[i] for i in members], [temperatures[i] for i in members]),
                            age_min))
    print(table(["models", "UTKFace MAE", "60+", "gender", "FairFace exact", "within one", "gender"], rows))


if __name__ == "__main__":
    main()
