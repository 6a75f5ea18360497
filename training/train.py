"""Train a model on the packed crops: either shipped model, or any architecture under either recipe.

    python -m training.train --model a --data data/faces --out runs/model_a      # from scratch
    python -m training.train --model b --data data/faces --out runs/model_b      # dlib's ResNet, two stages
    python -m training.train --model b --architecture efficientnet_lite0 \\
        --backbone-weights efficientnet-lite0-57934424.pth                          # offline ImageNet weights
    python -m training.train --config my_run.json --epochs 5                       # settings from a file
    python -m training.train --out runs/model_b --resume                           # continue after a stop

--model starts from a shipped model's defaults; every other flag changes one setting (see --help,
made from `training.fit.config.TrainConfig`). The run saves all its settings as
RUN_DIR/train_config.json, which --config reads back. The pack may hold several data sets (UTKFace's
ages in years, FairFace's age groups); training draws from all of them, in their natural
proportions or in the shares given by --mix.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from training.fit.backbones import BackboneDownloadError
from training.fit.config import TrainConfig, add_arguments, load_json, merge, nest
from training.fit.trainer import CONFIG_NAME, RESUME_NAME, fit

log = logging.getLogger(__name__)

# How fast, not what: a resumed run may get the cores another run has freed.
RESUMABLE = {"threads"}


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a JSON file of settings (a run's train_config.json, or some of "
                        "its fields); flags given beside it override it")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished "
                        "epoch, with its saved settings (only --threads may change)")
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    config_file, resume = args.pop("config"), args.pop("resume")
    given = nest(args)
    try:
        if resume:
            out = given.get("out") or TrainConfig(model=given.get("model", "a")).out
            saved = load_json(Path(out) / CONFIG_NAME)
            ignored = sorted(set(args) - RESUMABLE - {"out", "model"})
            if ignored:
                log.warning("--resume keeps the run's saved settings; ignored: %s", ", ".join(ignored))
            return TrainConfig.from_dict(merge(saved, {k: v for k, v in given.items() if k in RESUMABLE})), True
        if config_file is None and "model" not in given:
            parser.error("say which shipped model to start from (--model a or --model b), or give --config")
        base = load_json(config_file) if config_file else {}
        return TrainConfig.from_dict(merge(base, given)), False
    except ValueError as error:
        raise SystemExit(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if int(os.environ.get("RANK", 0)) > 0:  # under torchrun, rank 0 tells the story
        logging.getLogger().setLevel(logging.WARNING)
    cfg, resume = parse_args(argv)
    if resume and not (Path(cfg.out) / RESUME_NAME).is_file():
        raise SystemExit(f"nothing to resume: {Path(cfg.out) / RESUME_NAME} does not exist")
    try:
        run_dir = fit(cfg, resume=resume)
    except (BackboneDownloadError, FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted; the last finished epoch is saved: add --resume to continue {cfg.out}") from None
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"model written to {run_dir}")


if __name__ == "__main__":
    main()
