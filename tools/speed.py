"""Training speed on this machine: images/s of Model A and Model B under each speed option.

    python -m tools.speed --data data/faces --out reports/speed.json

Each row changes one thing from the row it names as its base and runs real training steps
(`training.fit.trainer.images_per_second`: the trainer's own `train_step`, data loader and
augmentation, every layer trainable) on packed training faces, timing `--steps` steps after
`--warmup` steps. Weights start random: speed does
not depend on them. What an option does to accuracy is measured separately, by short training
runs (docs/training.md, "Training speed on the CPU").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from training.data.pack import FacePack
from training.evaluation.markdown import table
from training.fit.config import TrainConfig
from training.fit.trainer import images_per_second

log = logging.getLogger(__name__)

# (name, base row, changes to TrainConfig). The first row of each model is the trainer's old CPU default,
# both models at 112 px (the table in docs/training.md was measured there).
VARIANTS: list[tuple[str, str | None, dict]] = [
    ("decode every epoch, 2 workers, fp32", None,
     {"num_workers": 2, "channels_last": False, "amp": False, "input_size": 112, "crops_in_memory": False}),
    ("decode once, 2 workers", "decode every epoch, 2 workers, fp32", {"crops_in_memory": True}),
    ("decode once, no workers", "decode once, 2 workers", {"num_workers": 0}),
    ("+ channels_last", "decode once, no workers", {"channels_last": True}),
    ("+ bf16 autocast", "+ channels_last", {"amp": True}),
    ("bf16, 1 worker augmenting", "+ bf16 autocast", {"num_workers": 1}),
    ("bf16 autocast without channels_last", "decode once, no workers", {"amp": True}),
    ("+ torch.compile", "+ channels_last", {"compile": True}),
    ("bf16 + torch.compile", "+ bf16 autocast", {"compile": True}),
    ("1 thread", "+ channels_last", {"threads": 1}),
    ("batch 64", "+ channels_last", {"batch_size": 64}),
    ("batch 256", "+ channels_last", {"batch_size": 256}),
    ("input 96 px", "+ channels_last", {"input_size": 96}),  # too small for dlib's ResNet
    ("input 128 px", "+ channels_last", {"input_size": 128}),
    ("input 150 px", "+ channels_last", {"input_size": 150}),  # dlib's own input size
    ("loader only, no training step", "+ bf16 autocast", {"loader_only": True}),
]
NOT_CONFIG = {"loader_only"}  # a setting of this benchmark, not of TrainConfig
SKIP = {"a": {"input 150 px"}, "b": {"input 96 px"}}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/faces")
    p.add_argument("--models", default="a,b")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", help="run only the rows whose names contain this text (and their bases)")
    p.add_argument("--out", help="write the rows as JSON here (updating the rows of an earlier run)")
    a = p.parse_args(argv)
    pack = FacePack(a.data)
    threads = torch.get_num_threads()
    rows = []
    for model in a.models.split(","):
        configs: dict[str, dict] = {}
        for name, base, changes in VARIANTS:
            settings = {**(configs[base] if base else {"threads": threads}), **changes}
            configs[name] = settings
            if (a.only and a.only not in name) or name in SKIP[model]:
                continue
            options = {k: v for k, v in settings.items() if k not in NOT_CONFIG}
            cfg = TrainConfig(model=model, data=a.data, device="cpu", **options)
            rate = images_per_second(cfg, pack, a.steps, a.warmup, loader_only=settings.get("loader_only", False))
            row = {"model": model, "option": name, "base": base, "images_per_s": round(rate, 1),
                   "architecture": cfg.architecture, "input_size": cfg.input_size, "batch_size": cfg.batch_size,
                   "threads": cfg.threads, **{k: v for k, v in dataclasses.asdict(cfg).items() if k in changes}}
            log.info("model %s, %s: %.1f images/s", model, name, rate)
            rows.append(row)
    if a.out:  # rows measured now replace the same rows of an earlier run; the others stay
        out = Path(a.out)
        earlier = json.loads(out.read_text()) if out.is_file() else []
        fresh = {(r["model"], r["option"]) for r in rows}
        rows = [r for r in earlier if (r["model"], r["option"]) not in fresh] + rows
        order = [name for name, _, _ in VARIANTS]
        rows.sort(key=lambda r: (r["model"], order.index(r["option"])))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(["model", "option", "compared with", "images/s"],
                [[r["model"].upper(), r["option"], r["base"] or "", f"{r['images_per_s']:.0f}"] for r in rows]))


if __name__ == "__main__":
    main()
