"""Choose Model B's backbone: accuracy with frozen ImageNet features vs CPU time per face.

    python -m training.compare_backbones --data data/utkface --weights-dir ../shared/weights

For each backbone and input size, the pooled features of N training and M validation faces are
computed once (frozen, no augmentation); the two heads are trained on them, and validation MAE
and gender accuracy are reported beside the backbone's CPU time for one face. This is a cheap
probe of how much each backbone's features know about age and gender before fine-tuning, run on
the validation split only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from demo.heads import AgeGenderHeads
from demo.models import NORMALISATION, build_model
from training.backbones import PRETRAINED_FILES, load_pretrained_backbone
from training.dataset import FaceDataset, FacePack
from training.losses import LossWeights, multitask_loss
from training.metrics import Outputs, cpu_ms_per_face, face_metrics


@torch.inference_mode()
def features(model, loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    feats, ages, genders = [], [], []
    for x, age, _, gender, *_ in loader:
        feats.append(model.pool(model.backbone(x)).flatten(1))
        ages.append(age)
        genders.append(gender)
    return torch.cat(feats), torch.cat(ages), torch.cat(genders)


def probe(train, val, epochs: int = 60, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    heads = AgeGenderHeads(train[0].shape[1], 116)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        heads.train()
        for idx in torch.randperm(len(train[0])).split(128):
            age_logits, gender_logit = heads(train[0][idx])
            ages = train[1][idx]
            loss, _ = multitask_loss(age_logits, gender_logit, ages, ages, train[2][idx], 1, LossWeights())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    heads.eval()
    with torch.inference_mode():
        age_logits, gender_logit = heads(val[0])
    zeros = torch.zeros_like(val[1])
    metrics = face_metrics(Outputs(age_logits, gender_logit, val[1], val[1], val[2], race=zeros, dataset=zeros), 1)
    return metrics["age_mae"], metrics["gender_accuracy"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights-dir", type=Path, required=True, help="folder with the ImageNet files")
    parser.add_argument("--train", type=int, default=3000, help="training faces for the probe")
    parser.add_argument("--val", type=int, default=1000, help="validation faces for the probe")
    parser.add_argument("--sizes", default="112,128")
    parser.add_argument("--out", type=Path, default=Path("reports/backbones.json"))
    parser.add_argument("--latency-only", action="store_true", help="time the backbones, skip the probe")
    args = parser.parse_args(argv)
    pack = FacePack(args.data)
    rows = []
    for arch, file in PRETRAINED_FILES.items():
        model = build_model(arch, 116)
        load_pretrained_backbone(model, arch, args.weights_dir / file)
        model.eval()
        mean, std = NORMALISATION[arch]
        for size in (int(s) for s in args.sizes.split(",")):
            mae = acc = float("nan")
            if not args.latency_only:
                loaders = [DataLoader(FaceDataset(pack, pack.indices(split, n, "utkface"), size, mean, std),
                                      batch_size=128)
                           for split, n in (("train", args.train), ("val", args.val))]
                mae, acc = probe(features(model, loaders[0]), features(model, loaders[1]))
            row = {"backbone": arch, "input_size": size, "val_mae": round(mae, 2), "val_gender_acc": round(acc, 4),
                   "cpu_ms_per_face": round(cpu_ms_per_face(model, size), 1), "threads": torch.get_num_threads()}  # noqa: E501
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("| backbone | input | probe val MAE | probe val gender acc. | CPU ms/face |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['backbone']} | {r['input_size']} | {r['val_mae']:.2f} | {100 * r['val_gender_acc']:.1f} % | "
              f"{r['cpu_ms_per_face']:.1f} |")


if __name__ == "__main__":
    main()
