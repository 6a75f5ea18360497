import json

import pytest
import torch
from safetensors.torch import load_file

from demo.checkpoint import ModelConfig, build_from_config, load_model, save_model
from tools.average_weights import main


def _run(folder, seed, architecture="scratch_cnn"):
    config = ModelConfig(name="tiny", architecture=architecture, input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                         crop_size=128, crop_margin=0.0,
                         arch_kwargs={"widths": [4, 8]} if architecture == "scratch_cnn" else {})
    torch.manual_seed(seed)
    save_model(build_from_config(config), config, folder)
    (folder / "train_config.json").write_text(json.dumps({"model": "a", "out": str(folder)}))


def test_the_soup_is_the_mean_of_the_runs_and_loads_like_a_run(tmp_path, capsys):
    _run(tmp_path / "one", seed=0)
    _run(tmp_path / "two", seed=1)
    main([str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "soup")])
    one, two, soup = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two", "soup"))
    conv = next(k for k, v in one.items() if v.dim() == 4)
    assert not torch.equal(one[conv], two[conv])
    assert torch.allclose(soup[conv], (one[conv] + two[conv]) / 2)
    counts = [k for k, v in one.items() if not v.is_floating_point()]
    assert counts and all(torch.equal(soup[k], one[k]) for k in counts)  # BatchNorm's step counts: the first run's
    assert load_model(tmp_path / "soup").config == load_model(tmp_path / "one").config
    settings = json.loads((tmp_path / "soup" / "train_config.json").read_text())
    assert settings["out"] == str(tmp_path / "soup")  # training.calibrate writes into the soup, not the first run
    assert "training.calibrate" in capsys.readouterr().out


def test_runs_of_different_networks_are_refused(tmp_path):
    _run(tmp_path / "cnn", seed=0)
    _run(tmp_path / "mobile", seed=0, architecture="mobilenet_v2")
    with pytest.raises(SystemExit, match="different networks"):
        main([str(tmp_path / "cnn"), str(tmp_path / "mobile"), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()
