"""Average the weights of trained runs of one network into a new run folder (a "model soup").

    python -m tools.average_weights runs/r4_b runs/r5_b_24ep --out runs/soup_b
    python -m training.calibrate runs/soup_b      # its calibration fitted on validation, as training ends by doing

Models fine-tuned from one pretrained start can lie in one basin, where the mean of their weights is
better than either (Wortsman et al., "Model soups", 2022); this tests that for runs of this project.
Floating-point tensors are averaged; integer ones (BatchNorm's step counts) are the first run's. The
new folder gets the first run's config.json and train_config.json ("out" set to the new folder), so
`training.calibrate` and `training.evaluate` read it like any run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, TRAIN_CONFIG = "model.safetensors", "config.json", "train_config.json"


def average(runs: list[Path], out: Path) -> float:
    """Write the mean of `runs`' weights to `out`; returns the L2 distance between the first two runs' weights."""
    configs = [json.loads((run / CONFIG).read_text()) for run in runs]
    if len({(c["architecture"], json.dumps(c["arch_kwargs"], sort_keys=True)) for c in configs}) > 1:
        raise SystemExit("the runs are of different networks: " + ", ".join(
            f"{run} ({c['architecture']})" for run, c in zip(runs, configs)))
    states = [load_file(run / WEIGHTS) for run in runs]
    first = states[0]
    mean = {key: torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
            if value.is_floating_point() else value for key, value in first.items()}
    distance = sum(float((first[k].float() - states[1][k].float()).square().sum())
                   for k in first if first[k].is_floating_point()) ** 0.5
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, out / WEIGHTS, metadata={"format": "pt", "architecture": configs[0]["architecture"]})
    shutil.copyfile(runs[0] / CONFIG, out / CONFIG)
    if (runs[0] / TRAIN_CONFIG).is_file():
        settings = json.loads((runs[0] / TRAIN_CONFIG).read_text()) | {"out": str(out)}
        (out / TRAIN_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return distance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="two or more run (or model) folders of one network")
    parser.add_argument("--out", type=Path, required=True, help="the new run folder")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give two or more runs to average")
    distance = average(args.runs, args.out)
    print(f"averaged {len(args.runs)} runs into {args.out} (weights of the first two {distance:.1f} apart, L2); "
          f"next: python -m training.calibrate {args.out}")


if __name__ == "__main__":
    main()
