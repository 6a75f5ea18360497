"""How a measuring tool hands back its numbers: printed as JSON, and the same JSON written to --out when given."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, out: Path | None, indent: int = 2) -> None:
    """Print `report` as JSON; write it to `out` too (its folder made), ending in a newline, when given."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
