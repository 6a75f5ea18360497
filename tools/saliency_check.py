"""How good and how costly are the "where each model looks" maps? HiResCAM against occlusion, on real faces.

    python -m tools.saliency_check --out reports/saliency.json --figure reports/saliency.jpg [--pack data/faces]

On every face of the example photos (demo/examples), for each shipped model: the milliseconds of
a map a face (both answers, a batch of one; with the mirror image where the model is served with
flip) and of the occlusion check; what the page pays for the maps of a photo of one face and of five
(`page_ms`); the share of each map's mass on the face's oval (`demo.saliency.face_oval`, 66 %
of the crop: a map spread evenly puts 66 % there); the correlation of the maps with occlusion (do
they point at the same parts?), of model A's map with model B's (do the models look at different
things?), and of the map with the
map of the same network with its weights randomised (Adebayo et al. 2018: a map that survives
that explains the input, not the model). The figure shows, per face, the crop and each model's
age and gender maps, the maps over occlusion. With `--pack`, also how many maps have nothing on them (no
positive part: the page would show a bare crop) among `--pack-faces` validation faces of a pack (a fixed draw).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from demo.checkpoint import LoadedModel
from demo.faces import FaceDetector
from demo.predictor import Predictor
from demo.saliency import Explainer, face_oval, occlusion, overlay, share_in
from demo.sources import load_models, specs_from_env
from tools.output import emit

ROOT = Path(__file__).resolve().parents[1]


def randomised(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """The same network and config with every weight re-drawn (BatchNorm statistics kept)."""
    torch.manual_seed(seed)
    model = copy.deepcopy(loaded.model)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
    return LoadedModel(model, loaded.config, loaded.folder, loaded.device)


def correlation(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def page_cost(predictor: Predictor, explainers: dict[str, Explainer], runs: int = 10) -> dict[str, dict[str, float]]:
    """What ticking "Show where each model looks" adds to a photo on the page: the median ms of the maps and the
    overlaid images (`demo.ui.saliency_items`), for a photo of one face and of five, each model and both."""
    from demo.ui import saliency_items

    cost = {}
    for label, photo in (("1 face", ROOT / "demo" / "examples" / "astronaut.jpg"),
                         ("5 faces", ROOT / "demo" / "examples" / "group.jpg")):
        result = predictor.predict(Image.open(photo).convert("RGB"))
        for keys in [[key] for key in explainers] + [list(explainers)]:
            chosen = {key: explainers[key] for key in keys}
            saliency_items(result, chosen)  # warm-up
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                saliency_items(result, chosen)
                times.append((time.perf_counter() - start) * 1000)
            cost.setdefault(label, {})["+".join(k.upper() for k in keys)] = round(statistics.median(times), 1)
    return cost


def empty_maps(explainers: dict[str, Explainer], pack_folder: Path, faces: int, batch: int = 50) -> dict:
    """Per model and answer, how many of `faces` validation faces of a pack (a fixed random draw) get an empty map."""
    from training.data.pack import FacePack

    pack = FacePack(pack_folder)
    crops = [pack.image(int(i)) for i in pack.indices("val", faces)]
    counts: dict = {"faces": len(crops)}
    for key, explainer in explainers.items():
        maps = [m for k in range(0, len(crops), batch) for m in explainer.maps(crops[k:k + batch])]
        counts[key] = {task: sum(float(getattr(m, task).max()) == 0 for m in maps) for task in ("age", "gender")}
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, nargs="+",
                        default=sorted((ROOT / "demo" / "examples").glob("*.jpg")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="the numbers as JSON")
    parser.add_argument("--figure", type=Path, help="the maps as a JPEG")
    parser.add_argument("--pack", type=Path, help="a folder written by training.prepare: count empty maps on its "
                        "validation faces too")
    parser.add_argument("--pack-faces", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models, _ = load_models(specs_from_env(), offline=True)
    predictor = Predictor(models, FaceDetector())
    crops = [f.crop for photo in args.photos for f in predictor.predict(Image.open(photo).convert("RGB")).faces
             if f.judged]
    oval = face_oval(crops[0].size[0])
    explainers = {key: Explainer(m) for key, m in models.items()}
    random_explainers = {key: Explainer(randomised(m)) for key, m in models.items()}
    rows: dict[str, dict[str, list]] = {key: {} for key in models}
    figure_rows, maps_by_model = [], {}
    for key, explainer in explainers.items():
        explainer.maps(crops[:1])  # warm-up
        maps_by_model[key] = []
        for crop in crops:
            start = time.perf_counter()
            (maps,) = explainer.maps([crop])
            gradcam_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            occluded = occlusion(models[key], crop)
            occlusion_ms = (time.perf_counter() - start) * 1000
            (random_maps,) = random_explainers[key].maps([crop])
            maps_by_model[key].append(maps)
            r = rows[key]
            r.setdefault("gradcam_ms", []).append(gradcam_ms)
            r.setdefault("occlusion_ms", []).append(occlusion_ms)
            for task in ("age", "gender"):
                heat, check = getattr(maps, task), getattr(occluded, task)
                r.setdefault(f"{task}_gradcam_on_face_oval", []).append(share_in(heat, oval))
                r.setdefault(f"{task}_occlusion_on_face_oval", []).append(share_in(check, oval))
                r.setdefault(f"{task}_gradcam_vs_occlusion", []).append(correlation(heat, check))
                r.setdefault(f"{task}_vs_randomised_weights", []).append(correlation(heat, getattr(random_maps, task)))
            figure_rows.append((key, crop, maps, occluded))
    report: dict = {"faces": len(crops), "threads": args.threads,
                    "face_oval_share_of_crop": round(float(oval.mean()), 3),
        "stage": {key: e.stage for key, e in explainers.items()}}
    for key, r in rows.items():
        # A randomised network's map is often empty (nothing positive): no correlation, counted apart.
        report[key] = {name: _median(values) for name, values in r.items()}
        report[key]["randomised_maps_empty"] = sum(v is None for task in ("age", "gender")
                                                   for v in r[f"{task}_vs_randomised_weights"])
    report["a_vs_b"] = {task: round(statistics.median(
        correlation(getattr(a, task), getattr(b, task)) for a, b in zip(maps_by_model["a"], maps_by_model["b"])), 3)
        for task in ("age", "gender")} if set(models) >= {"a", "b"} else None
    report["page_ms"] = page_cost(predictor, explainers)
    if args.pack:
        report["empty_maps_on_validation_faces"] = empty_maps(explainers, args.pack, args.pack_faces)
    emit(report, args.out)
    if args.figure:  # per face two rows, the map then occlusion: the crop, then A age, A gender, B age, B gender
        tiles = []
        for crop in crops:
            for method in (2, 3):
                row = [np.asarray(crop.convert("RGB"))]
                for key in models:
                    found = next(t for t in figure_rows if t[0] == key and t[1] is crop)
                    row += [np.asarray(overlay(crop, getattr(found[method], task))) for task in ("age", "gender")]
                tiles.append(np.concatenate(row, axis=1))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(tiles, axis=0)).save(args.figure, quality=85)


if __name__ == "__main__":
    main()
