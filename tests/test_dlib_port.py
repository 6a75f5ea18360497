"""The PyTorch port of dlib's face-recognition ResNet gives dlib's own descriptors.

dlib (PyPI dlib-bin) is only the reference here; the converter reads the file without it and the
app needs nothing of dlib.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from demo.dlib_resnet import DLIB_MEAN, DLIB_STD, DlibResNet, add_padded
from tests.conftest import ASTRONAUT, GROUP, HOPPER, pretrained_file
from tools import convert_dlib_backbone

dlib = pytest.importorskip("dlib")
DAT = pretrained_file("dlib_resnet")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("dlib") / "dlib_resnet.safetensors"
    convert_dlib_backbone.main(["--out", str(out)])
    return out


@pytest.fixture(scope="module")
def chips():
    """Every face dlib finds in the example photos, aligned to 150x150 by dlib's own 5-point alignment."""
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(DAT.parent / "shape_predictor_5_face_landmarks.dat"))
    found = []
    for path in (ASTRONAUT, HOPPER, GROUP):
        image = np.asarray(Image.open(path).convert("RGB"))
        found += [dlib.get_face_chip(image, shapes(image, box), size=150, padding=0.25) for box in detector(image, 1)]
    return found


def test_port_gives_dlibs_descriptors(converted, chips):
    assert len(chips) >= 6
    reference = dlib.face_recognition_model_v1(str(DAT))
    expected = np.array([np.array(reference.compute_face_descriptor(chip)) for chip in chips])
    net = DlibResNet().eval()
    net.load_state_dict(load_file(converted), strict=True)
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / torch.tensor(DLIB_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        ours = net(x).numpy()
    assert np.abs(ours - expected).max() < 1e-3
    # Not a coincidence of small numbers: different faces have clearly different descriptors.
    assert np.linalg.norm(expected[0] - expected[1]) > 0.3


def test_a_file_of_another_kind_is_refused(tmp_path):
    wrong = tmp_path / "shape_predictor.dat"
    wrong.write_bytes((DAT.parent / "shape_predictor_5_face_landmarks.dat").read_bytes()[:4096])
    with pytest.raises(SystemExit, match="is not dlib's face-recognition ResNet"):
        convert_dlib_backbone.main(["--dat", str(wrong), "--out", str(tmp_path / "x.safetensors")])


def test_residual_sum_pads_like_dlib():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    total = add_padded(a, b)
    assert total.shape == (1, 2, 4, 4)
    assert total[0, 0, 0, 0] == 11 and total[0, 0, 3, 3] == 10 and total[0, 1, 0, 0] == 1 and total[0, 1, 3, 3] == 0


def test_model_b_on_the_dlib_backbone(converted):
    from demo.models import ARCHITECTURES, build_model
    from training.fit.backbones import load_pretrained

    model = build_model("dlib_resnet", 116)
    load_pretrained(model, "dlib_resnet", converted)
    reference = DlibResNet()
    reference.load_state_dict(load_file(converted))
    assert torch.equal(model.backbone[1][0].conv1.weight, reference.levels[0][0].conv1.weight)
    assert (ARCHITECTURES["dlib_resnet"].mean, ARCHITECTURES["dlib_resnet"].std) == (DLIB_MEAN, DLIB_STD)
    with torch.inference_mode():
        age_logits, gender_logit = model.eval()(torch.randn(2, 3, 112, 112))
    assert age_logits.shape == (2, 116) and gender_logit.shape == (2,)


def test_training_model_b_on_it_runs(converted, tiny_pack, tmp_path):
    from demo.checkpoint import load_model
    from training.train import main

    main(["--model", "b", "--architecture", "dlib_resnet", "--backbone-weights", str(converted), "--data",
          str(tiny_pack), "--out", str(tmp_path / "b"), "--input-size", "112", "--epochs", "2", "--stage1-epochs", "1",
          "--batch-size", "8", "--workers", "0", "--device", "cpu"])
    loaded = load_model(tmp_path / "b")
    assert loaded.config.architecture == "dlib_resnet" and loaded.config.mean == DLIB_MEAN
    assert (tmp_path / "b" / "history.csv").read_text().count("\n") == 3  # header + two epochs
