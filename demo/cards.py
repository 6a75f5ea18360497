"""What a model's card says it measured, for the page: which model to believe, and how far.

`training.push` writes the card (README.md beside the weights, on the Hub and in weights/) with a
model-index of the test-split metrics per data set; this reads it back without a network.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
GENDER = "Gender accuracy"
# The card's metric names shown on the page, and how.
SHOWN = {
    "Age MAE (years)": lambda v: f"age MAE {v:.2f} years",
    "Age group accuracy (exact)": lambda v: f"age group {100 * v:.1f} % exact",
    GENDER: lambda v: f"gender {100 * v:.1f} %",
}


@dataclass(frozen=True)
class Measured:
    """A model's test-split metrics by data set (as the card names them), metric name -> value."""

    by_dataset: dict[str, dict[str, float]]

    @property
    def gender_accuracy(self) -> float | None:
        """Gender accuracy averaged over the data sets it was measured on."""
        values = [m[GENDER] for m in self.by_dataset.values() if GENDER in m]
        return statistics.fmean(values) if values else None

    def summary(self) -> str:
        """'UTKFace: age MAE 5.30 years, gender 91.9 %; FairFace: age group 47.5 % exact, gender 84.0 %'"""
        parts = []
        for dataset, metrics in self.by_dataset.items():
            shown = [show(metrics[name]) for name, show in SHOWN.items() if name in metrics]
            if shown:
                parts.append(f"{dataset.removesuffix(' (test split)')}: " + ", ".join(shown))
        return "; ".join(parts)


def read_measured(folder: Path) -> Measured | None:
    """The metrics on the card in `folder`, or None when it has none (a model not evaluated yet)."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        results = ModelCard.load(path).data.eval_results or []
    except Exception as error:  # a hand-edited card: the page goes without the numbers, the app still serves
        log.warning("could not read the metrics on %s: %s", path, error)
        return None
    by_dataset: dict[str, dict[str, float]] = {}
    for r in results:
        by_dataset.setdefault(r.dataset_name, {})[r.metric_name] = float(r.metric_value)
    return Measured(by_dataset) if by_dataset else None
