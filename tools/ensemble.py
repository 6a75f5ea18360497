"""What averaging several models' answers would buy, on validation faces: each model alone, then every
combination of two or more, their age distributions and P(female) averaged.

    python -m tools.ensemble weights/model_b runs/r6_b runs/r6_b2 --data data/faces

Each model's answers are read as the app serves them (its flip, logit adjustment and gender temperature);
the averaged ones are scored without a range (no rule has been fitted to them). Prints a Markdown
table: UTKFace age MAE, MAE at 60+ and gender accuracy; FairFace age group exact, within one and
gender accuracy. (An average of k models costs k models' time a face.)
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import torch

from demo.checkpoint import load_model
from training.data.pack import FacePack
from training.evaluation.markdown import pct, table
from training.evaluation.metrics import Outputs, split_metrics
from training.evaluation.report import served_outputs


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="two or more run or model folders")
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give two or more models")
    torch.set_num_threads(args.threads)
    pack = FacePack(args.data)
    outputs, temperatures, names, age_mins = [], [], [], set()
    for folder in args.models:
        loaded = load_model(folder, "cpu")
        outputs.append(served_outputs(loaded, pack, args.split, "cpu"))
        temperatures.append(loaded.config.gender_temperature)
        names.append(folder.name)
        age_mins.add(loaded.config.age_min)
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
