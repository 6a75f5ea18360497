"""How a command fares beside another busy process: its wall time alone, then beside a process keeping both cores
busy (PyTorch matrix products on 2 threads, as a second user's job or a training run would).

    python -m tools.beside_busy --runs 2 --out reports/beside_busy.json -- \\
        python -m demo.predict clip.mp4 --out /tmp/rows.csv --offline --threads 1

The command is run `--runs` times each way (its --out removed before each run by the command's own arguments:
pass a scratch path); prints the median seconds alone, beside the busy process, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tools.output import emit

BUSY = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1500, 1500)\nwhile True:\n    a @ a\n"


def timed(command: list[str], scratch: Path | None) -> float:
    if scratch is not None and scratch.exists():
        scratch.unlink()
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--scratch", type=Path, help="a file the command writes, removed before each run")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to time after --")
    alone = [timed(command, args.scratch) for _ in range(args.runs)]
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env={**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        time.sleep(2)  # the busy process up to speed
        if busy.poll() is not None:
            raise SystemExit("the busy process did not start")
        beside = [timed(command, args.scratch) for _ in range(args.runs)]
    finally:
        busy.kill()
    report = {"command": command, "runs": args.runs, "alone_s": statistics.median(alone),
              "beside_busy_s": statistics.median(beside)}
    report["ratio"] = report["beside_busy_s"] / report["alone_s"]
    emit(report, args.out, indent=1)


if __name__ == "__main__":
    main()
