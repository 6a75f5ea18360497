"""Crop every face of data-set downloads with the app's own detector and alignment, and pack them.

    python -m training.prepare --data PATH/UTKFace.tar.gz --data PATH/FairFace-train-15k.tar \
        --data PATH/FairFace-train-15001-36000.tar.gz --out data/faces

Each --data is an archive or a folder, as downloaded; which data set it is (UTKFace, FairFace, or
any other registered in training/data/), is recognised from its content. Writes splits.csv,
faces.npz and prepare.json to --out (see training/data/prepare.py). Resumable: re-running the
same command only does what is missing.

The split keeps near-copies of a photo and photos of one adult on one side: the adults are told
apart by dlib's face-recognition network (the backbone of Model B, from the PyPI package
face-recognition-models), run on the crops (training/data/groups.py).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from demo.dlib_resnet import DLIB_MEAN, DLIB_STD, DlibResNet
from demo.faces import to_model_input
from training.data.groups import Describer
from training.data.prepare import DEFAULT_GROUPING, LOSSLESS, prepare
from training.fit.backbones import download_state_dict

# dlib's network reads 150 px chips; ours are resized to that (descriptors within about 0.2 of dlib's own).
DLIB_INPUT = 150


def dlib_describer(device: str = "cpu", batch_size: int = 128) -> Describer:
    """Crops -> dlib's 128-d face descriptors (people lie about 0.6 apart and more)."""
    net = DlibResNet()
    net.load_state_dict(download_state_dict("dlib_resnet"))
    net = net.eval().to(device)

    @torch.inference_mode()
    def describe(crops: np.ndarray) -> np.ndarray:
        out = [np.zeros((0, net.descriptor.out_features), np.float32)]
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(crops[start : start + batch_size]).permute(0, 3, 1, 2)
            out.append(net(to_model_input(list(batch), DLIB_INPUT, DLIB_MEAN, DLIB_STD).to(device)).cpu().numpy())
        return np.concatenate(out)

    return describe


def quality(text: str) -> int | str:
    if text == LOSSLESS:
        return text
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{LOSSLESS!r} or a WebP quality 1-100, not {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="a data set's archive or folder, as downloaded; repeat for several")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0: the project's split)")
    parser.add_argument("--device", default="cpu", help="device for MTCNN and the face descriptors")
    parser.add_argument("--split-by", choices=("groups", "hash"), default="groups",
                        help="groups (default): near-copies and one adult's photos on one side; hash: each image by "
                             "its content hash alone, as packs were split before (to compare with old numbers)")
    parser.add_argument("--crop-quality", type=quality, default=LOSSLESS,
                        help="how the pack stores crops: lossless (default: what the app serves) or a lossy WebP "
                             "quality 1-100, for a pack small enough to carry (q80: about a tenth of the size, "
                             "ages moved by half a year against the app's crops)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    missing = [str(p) for p in args.data if not p.exists()]
    if missing:
        raise SystemExit(f"--data {', '.join(missing)} does not exist")
    try:
        grouped = args.split_by == "groups"
        summary = prepare(args.data, args.out, seed=args.seed, device=args.device,
                          describe=dlib_describer(args.device) if grouped else None,
                          grouping=DEFAULT_GROUPING if grouped else None, crop_quality=args.crop_quality)
    except ValueError as error:  # a source no data set recognises, no labelled images, a changed --out
        raise SystemExit(str(error)) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
