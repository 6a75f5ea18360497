"""From downloads to batches: data-set specs and their registry, records and splits, the pack, the Dataset.

Importing this package registers the shipped data sets: UTKFace first, then FairFace. A face's data
set is stored by its place in that order, so the order is part of what a run reproduces.
"""

import training.data.utkface  # noqa: F401

# isort: split
import training.data.fairface  # noqa: F401
