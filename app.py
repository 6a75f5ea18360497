"""Age and gender from face photos, Model A (from scratch) and Model B (transfer) side by side.

    python app.py                 # models from the Hub, falling back to weights/ when offline
    python app.py --offline       # weights/ only
    python app.py --model-a path/to/model_folder --port 7860

Also the entry point of the Hugging Face Space. Importing this module does nothing: models are
resolved and loaded in main().
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import replace

from demo.sources import offline_from_env, specs_from_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--offline", action="store_true", help="use weights/ and never contact the Hub")
    p.add_argument("--model-a", help="Hub repo id or local folder for Model A")
    p.add_argument("--model-b", help="Hub repo id or local folder for Model B")
    p.add_argument("--revision", help="Hub revision for both models")
    p.add_argument("--device", default="cpu")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per HTTP request
    args = parse_args(argv)
    from demo.faces import LIVE_MIN_FACE_SIZE, FaceDetector
    from demo.predictor import Predictor
    from demo.sources import load_models
    from demo.ui import build_demo, launch

    overrides = {"a": args.model_a, "b": args.model_b}
    specs = [replace(s, repo_id=overrides[s.key] or s.repo_id, revision=args.revision or s.revision)
             for s in specs_from_env()]
    models, sources = load_models(specs, offline=args.offline or offline_from_env(), device=args.device)
    for key, model in models.items():  # export to the engine now, not on the first visitor's photo
        started = time.perf_counter()
        model.runner  # noqa: B018
        logging.info("model %s runs on %s (ready in %.1f s)", key.upper(), model.engine, time.perf_counter() - started)
    predictor = Predictor(models, FaceDetector(device=args.device))
    live = Predictor(models, FaceDetector(device=args.device, min_face_size=LIVE_MIN_FACE_SIZE))
    demo = build_demo(predictor, live, sources)
    launch(demo, args.host, args.port)


if __name__ == "__main__":
    main()
