"""Choose the app's minimum detection score from the training photos.

    python -m training.detection_threshold --data data/faces [--keep 0.995] [--out reports/detection_scores.png]

Every training photo shows one labelled face, which `training.prepare` took as the detection nearest
the centre: its score is what a real face scores. UTKFace chips hold one face each, so the other
detections on them are almost all false (a hand, an ear, a pattern); on FairFace's photos the
others are often real people in the background. The threshold is the highest score that keeps
--keep of the real faces (training split only); the script reports what it removes of the rest
and draws both distributions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.dataset import FacePack
from training.records import DATASETS, SPLITS


def choose(true_scores: np.ndarray, keep: float) -> float:
    """The highest threshold (to 0.01, rounded down) that keeps at least `keep` of the true faces."""
    return float(np.floor(np.quantile(true_scores, 1 - keep) * 100) / 100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--keep", type=float, default=0.995, help="share of real faces the threshold keeps")
    parser.add_argument("--out", type=Path, help="histogram PNG")
    args = parser.parse_args(argv)
    pack = FacePack(args.data)
    train = SPLITS.index("train")
    true = pack.det_score[(pack.split == train) & pack.detected]
    threshold = choose(true, args.keep)
    report = {"threshold": threshold, "keep": args.keep, "true_faces": int(len(true))}
    for d, name in enumerate(DATASETS):
        mine = (pack.split == train) & pack.detected & (pack.dataset == d)
        others = pack.other_scores[(pack.other_split == train) & (pack.other_dataset == d)]
        if not mine.any():
            continue
        report[name] = {
            "photos": int(mine.sum()),
            "true_face_score_quantiles": {q: round(float(np.quantile(pack.det_score[mine], q)), 4)
                                          for q in (0.001, 0.005, 0.01, 0.05, 0.5)},
            "true_faces_kept": round(float((pack.det_score[mine] >= threshold).mean()), 4),
            "other_detections": int(len(others)),
            "other_detections_removed": round(float((others < threshold).mean()), 4) if len(others) else None,
        }
    print(json.dumps(report, indent=2))
    if args.out:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        bins = np.linspace(0.8, 1.0, 81)
        ax.hist(np.clip(true, 0.8, 1), bins, alpha=0.6, density=True, label="the labelled face of each photo")
        for d, name in enumerate(DATASETS):
            others = pack.other_scores[(pack.other_split == train) & (pack.other_dataset == d)]
            if len(others):
                ax.hist(np.clip(others, 0.8, 1), bins, alpha=0.6, density=True,
                        label=f"other detections, {name} ({len(others)})")
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.text(threshold, ax.get_ylim()[1] * 0.9, f" default {threshold:.2f}", fontsize=9)
        ax.set(yscale="log", xlabel="MTCNN detection score (scores below 0.8 are never reported)",
               ylabel="density", title="Detection scores on the training photos")
        ax.legend(fontsize=8)
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
