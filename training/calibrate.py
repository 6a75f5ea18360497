"""Fit a trained model's calibration on the validation faces again, as training ends by doing.

    python -m training.calibrate runs/model_b [--data data/faces] [--age-adjust-tolerance 0.05]
        [--range-rule spread|belt|percentiles] [--range-spread-power P] [--age-estimate mean|median]
        [--flip on|gender|off]

Refits the age head's logit adjustment, its range, the gender temperature and the unsure threshold of
the run's best checkpoint, with the run's own settings (RUN_DIR/train_config.json),
and rewrites its config.json and val_metrics.json; the weights are not touched. For a run trained
before the calibration changed, or to try another tolerance, or flip averaging, without training again.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from demo.checkpoint import FLIP_MODES
from demo.heads import AGE_ESTIMATES
from training.data.dataset import FaceDataset
from training.data.pack import FacePack
from training.evaluation.ranges import bands_outside
from training.fit.config import RANGE_RULES, TrainConfig, load_json
from training.fit.trainer import CONFIG_NAME, calibrate, make_loader


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder written by training.train")
    parser.add_argument("--data", type=Path, help="the pack to take validation faces from (default: the run's)")
    parser.add_argument("--age-adjust-tolerance", type=float, help="default: the run's setting")
    parser.add_argument("--range-rule", choices=RANGE_RULES, help="spread (the default since round six: estimate "
                        "plus and minus multiples of the distribution's spread, by estimate), belt (the same "
                        "multiples by true age) or percentiles (before round six)")
    parser.add_argument("--range-spread-power", type=float, metavar="P", help="spread and belt: the spread raised to "
                        "this power (default: the run's setting, 1)")
    parser.add_argument("--age-estimate", choices=AGE_ESTIMATES, help="the age shown: the distribution's mean or its "
                        "median (spread and belt ranges only; default: the run's setting, mean)")
    parser.add_argument("--range-sweeps", type=int, help="percentiles only; default: the run's setting (0: "
                        "split-conformal levels alone)")
    parser.add_argument("--flip", choices=FLIP_MODES, help="average the answers (on), or the gender answer alone "
                        "(gender), over the face and its mirror image, in calibration and serving (default: the "
                        "run's setting)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        saved = load_json(args.run / CONFIG_NAME)
        saved.update(out=str(args.run), device=args.device)
        if args.data:
            saved["data"] = str(args.data)
        if args.age_adjust_tolerance is not None:
            saved["age_adjust_tolerance"] = args.age_adjust_tolerance
        if args.range_rule is not None:
            saved["range_rule"] = args.range_rule
        if args.range_spread_power is not None:
            saved["range_spread_power"] = args.range_spread_power
        if args.age_estimate is not None:
            saved["age_estimate"] = args.age_estimate
        if args.range_sweeps is not None:
            saved["range_sweeps"] = args.range_sweeps
        if args.flip is not None:
            saved["flip"] = args.flip
        cfg = TrainConfig.from_dict(saved)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    pack = FacePack(cfg.data)
    mcfg = cfg.model_config()
    val = FaceDataset(pack, pack.indices("val", cfg.limit), cfg.input_size, mcfg.mean, mcfg.std,
                      in_memory=cfg.crops_in_memory)
    metrics = calibrate(args.run, make_loader(cfg, val), cfg, pack)
    (args.run / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")  # the settings it was fitted with
    outside = bands_outside(metrics["range_cross_fitted"])
    print(f"calibrated {args.run}: logit adjustment {metrics['age_adjustment']:g}; range {metrics['range_kind']} "
          f"{metrics['range_rule']}; gender temperature {metrics['gender_temperature']:.3f}, unsure below "
          f"{metrics['gender_unsure_below']:.2f}; cross-fitted, bands outside 70-90 %: {', '.join(outside) or 'none'}")

if __name__ == "__main__":
    main()
