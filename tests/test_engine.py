"""The answer path on ONNX Runtime gives PyTorch's answers: the same networks, exported at load."""

import numpy as np
import pytest
import torch
from PIL import Image

from demo.checkpoint import forward_with_flip, load_model
from demo.engine import ENGINE_ENV, default_engine
from demo.faces import FaceDetector, to_model_input
from demo.predictor import Predictor
from tests.conftest import ASTRONAUT, GROUP, GROUP_FACES, HOPPER

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def engines():
    """The shipped models loaded twice: run by PyTorch and by ONNX Runtime."""
    return {engine: {key: load_model(f"weights/model_{key}", engine=engine) for key in "ab"}
            for engine in ("torch", "onnx")}


def test_each_model_gives_pytorchs_outputs_on_real_faces(engines, predictor):
    crops = [face.crop for photo in (GROUP, ASTRONAUT, HOPPER)
             for face in predictor.predict(Image.open(photo).convert("RGB")).faces if face.judged]
    assert len(crops) == GROUP_FACES + 2
    for key in "ab":
        torch_model, onnx_model = engines["torch"][key], engines["onnx"][key]
        c = torch_model.config
        batch = to_model_input(crops, c.input_size, c.mean, c.std)
        with torch.inference_mode():
            expected = forward_with_flip(torch_model.model, batch.contiguous(memory_format=torch.channels_last), c.flip)
        got = forward_with_flip(onnx_model.runner, batch, c.flip)
        for e, g in zip(expected, got):
            assert torch.allclose(e, g, atol=1e-4), (key, float((e - g).abs().max()))
        # And the answers read from them: the same ranges, P(female) within 1e-4.
        a, b = torch_model.predict(batch), onnx_model.predict(batch)
        assert torch.equal(a.age.low, b.age.low) and torch.equal(a.age.high, b.age.high), key
        assert torch.allclose(a.age.years, b.age.years, atol=1e-3) and torch.allclose(a.p_female, b.p_female, atol=1e-4)


def test_mtcnn_on_the_engine_finds_the_same_faces():
    onnx_detector = FaceDetector(engine="onnx")
    assert onnx_detector.engine == "onnx"
    torch_detector = FaceDetector(engine="torch")
    for photo in (GROUP, ASTRONAUT, HOPPER):
        image = Image.open(photo).convert("RGB")
        expected, got = torch_detector.detect(image), onnx_detector.detect(image)
        assert len(expected) == len(got) >= 1
        for e, g in zip(expected, got):
            assert max(abs(u - v) for u, v in zip(e.box, g.box)) < 1e-2 and abs(e.score - g.score) < 1e-4
            assert float(np.abs(np.subtract(e.landmarks, g.landmarks)).max()) < 1e-2


def test_the_predictor_answers_alike_on_either_engine(engines):
    image = Image.open(GROUP).convert("RGB")
    results = {engine: Predictor(models, FaceDetector(engine=engine)).predict(image)
               for engine, models in engines.items()}
    for a, b in zip(results["torch"].faces, results["onnx"].faces, strict=True):
        for key in "ab":
            x, y = a.answers[key], b.answers[key]
            assert (x.age_low, x.age_high, x.gender) == (y.age_low, y.age_high, y.gender)
            assert x.age == pytest.approx(y.age, abs=0.05) and x.p_female == pytest.approx(y.p_female, abs=1e-3)


def test_the_engine_is_chosen_by_environment(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "torch")
    assert default_engine() == "torch" and load_model("weights/model_a").engine == "torch"
    monkeypatch.setenv(ENGINE_ENV, "onnx")
    assert default_engine() == default_engine("detector") == "onnx" and FaceDetector().engine == "onnx"
    monkeypatch.setenv(ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="AGEGENDER_ENGINE must be one of onnx, torch"):
        default_engine()
    monkeypatch.delenv(ENGINE_ENV)
    assert default_engine() == "onnx"  # installed with the app's requirements
    assert default_engine("detector") == "torch" and FaceDetector().engine == "torch"  # measured faster here
