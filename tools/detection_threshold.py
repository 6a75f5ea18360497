"""Choose the app's minimum detection score from the training photos.

    python -m tools.detection_threshold --data data/faces [--keep 0.985] [--out reports/detection_scores.png]

Every training photo shows one labelled face, which `training.prepare` took as the detection nearest
the centre: its score is what a real face scores. UTKFace chips hold one face each, so the other
detections on them are almost all false (a hand, an ear, a pattern); on FairFace's photos the
others are often real people in the background. The threshold is the highest score (to 0.01)
that keeps --keep of the labelled faces of every data set (training split only); the script
reports what it removes of the other detections and draws both distributions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.data import spec
from training.data.pack import FacePack
from training.data.records import SPLITS


def choose(true_scores: list[np.ndarray], keep: float) -> float:
    """The highest threshold (to 0.01, rounded down) that keeps at least `keep` of every set of true faces."""
    return float(min(np.floor(np.quantile(scores, 1 - keep) * 100) / 100 for scores in true_scores))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder written by training.prepare")
    parser.add_argument("--keep", type=float, default=0.985,
                        help="share of each data set's labelled faces the threshold keeps")
    parser.add_argument("--out", type=Path, help="histogram PNG")
    args = parser.parse_args(argv)
    pack = FacePack(args.data)
    train = SPLITS.index("train")
    true = pack.det_score[(pack.split == train) & pack.detected]
    threshold = round(choose([true[pack.dataset[(pack.split == train) & pack.detected] == d]
                              for d in np.unique(pack.dataset)], args.keep), 2)
    report = {"threshold": threshold, "keep": args.keep, "true_faces": int(len(true))}
    for d, name in enumerate(spec.names()):
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
        grid = np.linspace(0.8, 1.0, 201)
        for d, name in enumerate(spec.names()):
            mine = pack.det_score[(pack.split == train) & pack.detected & (pack.dataset == d)]
            others = pack.other_scores[(pack.other_split == train) & (pack.other_dataset == d)]
            if len(mine):
                ax.plot(grid, [(mine >= t).mean() for t in grid], label=f"{name}: labelled faces kept")
            if len(others):
                ax.plot(grid, [(others >= t).mean() for t in grid], ls=":",
                        label=f"{name}: other detections kept ({len(others)})")
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.text(threshold, 0.05, f" default {threshold:.2f}", fontsize=9)
        ax.set(xlabel="minimum detection score (MTCNN never reports below 0.8)", ylabel="share kept",
               title="Detections kept by the threshold, training photos", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
