"""Milliseconds a model folder takes to answer one face (its flip setting included), on each engine, side by side.

    python -m tools.model_speed weights/model_b runs/r6_b [--threads 2] [--runs 60] [--faces 1]

Every (model, engine) pair answers the same random batch in turn, the order reversed every other run so the
machine's slow moments fall on all; prints the median milliseconds of each after 10 warm-up runs, with the
CPU named. For a candidate's serving cost (another input size, another architecture) against the shipped model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from demo.checkpoint import load_model
from demo.engine import ENGINES
from tools.benchmark import cpu_name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model or run folders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--faces", type=int, default=1, help="faces per batch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {(folder, engine): load_model(folder, engine=engine) for folder in args.models for engine in ENGINES}
    batches = {key: torch.randn(args.faces, 3, m.config.input_size, m.config.input_size) for key, m in models.items()}
    times: dict[tuple, list[float]] = {key: [] for key in models}
    warmup = 10
    for i in range(warmup + args.runs):
        for key, model in (list(models.items()) if i % 2 else list(models.items())[::-1]):
            started = time.perf_counter()
            model.predict(batches[key])
            if i >= warmup:
                times[key].append(1000 * (time.perf_counter() - started))
    print(json.dumps({"cpu": cpu_name(), "threads": args.threads, "faces": args.faces, "ms": {
        f"{folder} ({models[(folder, engine)].config.input_size} px, flip {models[(folder, engine)].config.flip}, "
        f"{engine})": round(statistics.median(values), 2) for (folder, engine), values in times.items()}}, indent=1))


if __name__ == "__main__":
    main()
