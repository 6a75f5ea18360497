"""Where each model looks: class-activation maps over a face crop, for the age answer and for the gender answer.

HiResCAM (Draelos and Carin 2020), the element-wise form of Grad-CAM (Selvaraju et al. 2017): at each
position of a stage of the trunk, each channel's activation times the answer's gradient with respect
to it, summed over channels; the positive part is kept and scaled up to the crop: the regions whose
features raised that answer, to first order. (Grad-CAM weighs each channel by its gradient averaged
over the positions first; where a channel's gradient changes sign across the face the averages
cancel, and Grad-CAM left 8 % of Model B's age maps on validation faces empty, HiResCAM none; see
docs/serving.md.) The answers explained are the ones the page shows:

- age: the log-probability the model gives its own 80 % range (the years it answered);
- gender: the logit signed towards the side P(female) leans to (evidence for "female" or for "male").

A model served with test-time flip answers with the mean over the face and its mirror image; its
maps then explain that mean: both images go through the network, the gradient is that of the
combined answer, and the mirror's map is flipped back and added to the face's own before the
positive part is kept. Each `FaceMaps` carries the answer it explains.

An `Explainer` keeps its own copy of the network with a hook on that stage, and serves one request
at a time: the hook never sees another request's forward pass, and the copy the predictions use is
left untouched. `occlusion` is the slower check: how much each answer drops when a patch of the
crop is greyed out (tools.saliency_check compares the two: they agree little, see docs/serving.md).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from demo.checkpoint import LoadedModel, decode_outputs, forward_with_flip
from demo.faces import to_model_input
from demo.heads import decode_age

# Faces are framed by the landmark template (demo.faces) with no margin: the face fills the crop
# but its corners. Its oval, for measuring where a map's mass lies: centre and half-axes, in crops.
FACE_OVAL = ((0.5, 0.52), (0.42, 0.5))
# Maps come from the deepest stage at least this many cells wide: Model A's last (7x7 at 112 px);
# Model B's last two are 4x4 and 2x2 at 150 px, too coarse to show a face's parts, so its third last (8x8).
MIN_CAM_SIDE = 7


@dataclass
class FaceMaps:
    """One face's maps from one model, each crop-sized, in [0, 1] (1: where the answer's evidence peaks),
    and the answer they explain (as `demo.predictor.ModelAnswer` holds it; None for a task the model
    was not trained on)."""

    age: np.ndarray | None
    gender: np.ndarray | None
    age_low: int | None = None
    age_high: int | None = None
    p_female: float | None = None

    def caption(self) -> str:
        """'age 27-36 | female 87 %': the answers the two maps explain."""
        age = "age" if self.age_low is None else f"age {self.age_low}-{self.age_high}"
        if self.p_female is None:
            return f"{age} | gender"
        side = "female" if self.p_female >= 0.5 else "male"
        return f"{age} | {side} {100 * max(self.p_female, 1 - self.p_female):.0f} %"


def face_oval(size: int) -> np.ndarray:
    """A `size` x `size` mask of the face's oval in a crop (66 % of it)."""
    (cx, cy), (rx, ry) = FACE_OVAL
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def share_in(heat: np.ndarray, mask: np.ndarray) -> float:
    """The share of a map's mass inside a mask."""
    return float(heat[mask].sum() / max(heat.sum(), 1e-12))


def _answers(loaded: LoadedModel, age_logits: torch.Tensor, gender_logit: torch.Tensor
             ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per face, from its (flip-combined) outputs: the log-probability of the model's own 80 % range,
    and the gender logit signed towards its answer."""
    c = loaded.config
    age = gender = None
    if "age" in c.tasks:
        logits = c.served_age_logits(age_logits.float())
        answer = decode_age(logits.detach(), c.age_min, c.range_rule)  # the range the page shows
        years = torch.arange(c.age_min, c.age_min + logits.shape[-1], dtype=torch.float32)
        inside = (years >= answer.low[:, None]) & (years <= answer.high[:, None])
        age = torch.logsumexp(torch.log_softmax(logits, dim=-1).masked_fill(~inside, -torch.inf), dim=-1)
    if "gender" in c.tasks:
        gender = gender_logit.float() * torch.sign(gender_logit.detach().float())
    return age, gender


def _output_module(stage: torch.nn.Module) -> torch.nn.Module:
    """The module computing a stage's output. A stage may be a slice of the trunk that forward never calls
    as such (Model A's): then the last module of the Sequential, as far down as Sequentials go."""
    while isinstance(stage, torch.nn.Sequential):
        stage = stage[-1]
    return stage


def deepest_stage(model: torch.nn.Module, input_size: int, min_side: int = MIN_CAM_SIDE) -> int:
    """The index of the deepest stage whose output is still at least `min_side` cells wide."""
    sides: dict[int, int] = {}
    hooks = [_output_module(stage).register_forward_hook(
        lambda module, inputs, output, i=i: sides.__setitem__(i, min(output.shape[-2:])))
        for i, stage in enumerate(model.stages)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
    return max(i for i, side in sides.items() if side >= min_side)


class Explainer:
    """Class-activation maps (HiResCAM) for one loaded model, on a private copy of its network."""

    def __init__(self, loaded: LoadedModel, stage: int | None = None) -> None:
        self.loaded = loaded
        self.model = copy.deepcopy(loaded.model).float().eval()
        self._lock = threading.Lock()
        self._features: torch.Tensor | None = None
        self.stage = deepest_stage(self.model, loaded.config.input_size) if stage is None else stage
        _output_module(self.model.stages[self.stage]).register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._features = output

    def maps(self, crops: list[Image.Image]) -> list[FaceMaps]:
        """Per crop, the age and gender maps, at the crops' size, of the answers the model serves."""
        if not crops:
            return []
        c = self.loaded.config
        batch = to_model_input(crops, c.input_size, c.mean, c.std).to(self.loaded.device)
        size = crops[0].size[::-1]
        with self._lock, torch.enable_grad():
            age_logits, gender_logit = forward_with_flip(self.model, batch, c.flip)
            features = self._features  # the faces', then (with flip) their mirror images'
            age, gender = _answers(self.loaded, age_logits, gender_logit)
            cams = {}
            for name, target in (("age", age), ("gender", gender)):
                if target is not None:  # each face's answer depends on its own crop only: one backward for all
                    (grad,) = torch.autograd.grad(target.sum(), features, retain_graph=True)
                    cams[name] = _cam(features.detach(), grad, size, len(crops))
            shown = decode_outputs(c, age_logits.detach(), gender_logit.detach())
        return [FaceMaps(cams["age"][i] if "age" in cams else None, cams["gender"][i] if "gender" in cams else None,
                         age_low=None if shown.age is None else int(shown.age.low[i]),
                         age_high=None if shown.age is None else int(shown.age.high[i]),
                         p_female=None if shown.p_female is None else float(shown.p_female[i]))
                for i in range(len(crops))]


def _cam(features: torch.Tensor, grad: torch.Tensor, size: tuple[int, int], faces: int) -> np.ndarray:
    """HiResCAM from a stage's features and the answer's gradient, scaled up to `size`, each map to [0, 1].

    With more rows than `faces`, the rows after them are the faces' mirror images: each mirror's
    weighted features are flipped back onto its face and added before the positive part is kept, the
    map of an answer that is the mean over both images.
    """
    cam = (grad.float() * features.float()).sum(dim=1, keepdim=True)
    if len(cam) > faces:
        cam = cam[:faces] + cam[faces:].flip(-1)
    cam = F.interpolate(F.relu(cam), size=size, mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / top).numpy()


def occlusion(loaded: LoadedModel, crop: Image.Image, window: int = 4, stride: int = 8) -> FaceMaps:
    """How much each answer (as the maps explain it) drops when a square of a `window`-th of the crop's side is
    greyed out, slid in steps of a `stride`-th; per pixel the mean drop of the squares covering it, scaled to
    [0, 1]: the slow, model-agnostic check on the maps."""
    c = loaded.config
    array = np.asarray(crop.convert("RGB"))
    h, w = array.shape[:2]
    side, step = h // window, h // stride
    corners = [(y, x) for y in range(0, h - side + 1, step) for x in range(0, w - side + 1, step)]
    variants = [array]
    for y, x in corners:
        covered = array.copy()
        covered[y:y + side, x:x + side] = 128
        variants.append(covered)
    batch = to_model_input(variants, c.input_size, c.mean, c.std).to(loaded.device)
    with torch.inference_mode():
        answers = _answers(loaded, *forward_with_flip(loaded.model, batch, c.flip))
    maps = []
    for answer in answers:
        if answer is None:
            maps.append(None)
            continue
        drops = (answer[0] - answer[1:]).clamp_min(0).float().numpy()
        total, count = np.zeros((h, w)), np.zeros((h, w))
        for (y, x), drop in zip(corners, drops):
            total[y:y + side, x:x + side] += drop
            count[y:y + side, x:x + side] += 1
        heat = total / np.maximum(count, 1)
        maps.append(heat / max(heat.max(), 1e-12))
    return FaceMaps(*maps)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white colour ramp for values in [0, 1], as HxWx3 floats in [0, 1]."""
    h = np.clip(heat, 0, 1)[..., None]
    return np.clip(np.concatenate([3 * h, 3 * h - 1, 3 * h - 2], axis=-1), 0, 1)


def overlay(crop: Image.Image, heat: np.ndarray | None) -> Image.Image:
    """The crop with the map laid over it: coloured where the map is high, the face showing through elsewhere."""
    base = np.asarray(crop.convert("RGB"), dtype=np.float32) / 255
    if heat is None:
        return Image.fromarray((base * 0.35 * 255).astype(np.uint8))  # no such answer: the crop, dimmed
    alpha = 0.25 + 0.6 * np.clip(heat, 0, 1)[..., None]
    mixed = (1 - alpha) * base * 0.8 + alpha * heat_colours(heat)
    return Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8))
