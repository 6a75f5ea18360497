"""A real, tiny training run: two steps on a handful of faces, save, reload, resume."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from training.dataset import AugmentConfig, FaceDataset, FacePack

from demo.checkpoint import load_model
from tests.conftest import SHARED_WEIGHTS
from training.train import TrainConfig, main, train


def _config(pack, out, **overrides) -> TrainConfig:
    settings = dict(model="a", data=str(pack), out=str(out), input_size=48, widths=(8, 16), epochs=2,
                    batch_size=4, num_workers=0, device="cpu", max_steps=None)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_two_steps_then_save_reload_identical_outputs(tiny_pack, tmp_path):
    run = train(_config(tiny_pack, tmp_path / "run", epochs=1, max_steps=2))
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "images_per_s" in history[0]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["max_steps"] == 2 and saved["augment"]["flip"] is True

    loaded = load_model(run)
    pack = FacePack(tiny_pack)
    c = loaded.config
    x = torch.stack([FaceDataset(pack, pack.indices("val"), c.input_size, c.mean, c.std)[0][0]])
    first = loaded.predict(x)
    again = load_model(run).predict(x)
    assert torch.equal(first.age.mean, again.age.mean) and torch.equal(first.p_female, again.p_female)
    # The calibration fitted on validation is in the config the app reads.
    val = json.loads((run / "val_metrics.json").read_text())
    assert c.age_temperature == val["age_temperature"]


def test_resume_continues_exactly_where_it_stopped(tiny_pack, tmp_path, monkeypatch):
    import training.train as train_module

    straight = train(_config(tiny_pack, tmp_path / "straight", epochs=2))

    real_save = train_module._save_resume
    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C came right after the first epoch was saved

    monkeypatch.setattr(train_module, "_save_resume", save_then_interrupt)
    with pytest.raises(SystemExit, match="--resume"):
        main(["--model", "a", "--data", str(tiny_pack), "--out", str(tmp_path / "resumed"), "--input-size", "48",
              "--widths", "8,16", "--epochs", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu"])
    assert (tmp_path / "resumed" / "history.csv").read_text().count("\n") == 2  # header + epoch 1
    monkeypatch.setattr(train_module, "_save_resume", real_save)
    main(["--model", "a", "--out", str(tmp_path / "resumed"), "--resume"])

    assert (tmp_path / "resumed" / "history.csv").read_text().count("\n") == 3
    w1 = torch.load(straight / "resume.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["model"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_resume_keeps_the_saved_settings_but_may_change_threads(tmp_path):
    from training.train import parse_args

    saved = TrainConfig(model="b", out=str(tmp_path), epochs=7, input_size=128, threads=1)
    (tmp_path / "train_config.json").write_text(json.dumps(dataclasses.asdict(saved)))
    cfg, resume = parse_args(["--model", "b", "--out", str(tmp_path), "--resume", "--threads", "2", "--epochs", "9"])
    assert resume and cfg == dataclasses.replace(saved, threads=2)


def test_resume_without_a_run_says_so(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"model": "a", "out": str(tmp_path)}))
    with pytest.raises(SystemExit, match="nothing to resume"):
        main(["--model", "a", "--out", str(tmp_path), "--resume"])


def test_single_task_run_records_its_task(tiny_pack, tmp_path):
    from training.losses import LossWeights

    run = train(_config(tiny_pack, tmp_path / "age_only", epochs=1, max_steps=1, loss=LossWeights(gender=0.0)))
    assert load_model(run).config.tasks == ("age",)


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="needs ../shared/weights")
def test_model_b_two_stages(tiny_pack, tmp_path):
    imagenet_file = SHARED_WEIGHTS / "mobilenet_v2-b0353104.pth"
    cfg = _config(tiny_pack, tmp_path / "b", model="b", architecture="mobilenet_v2", input_size=64, epochs=2,
                  stage1_epochs=1, finetune_stages=2, backbone_weights=str(imagenet_file))
    run = train(cfg)
    stages = [line.split(",")[1] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert stages == ["1", "2"]
    # Stage 1 leaves the backbone as loaded from ImageNet; only the top stages move in stage 2.
    weights = load_file(run / "model.safetensors")
    imagenet = torch.load(imagenet_file, weights_only=True)
    assert torch.equal(weights["backbone.0.0.weight"], imagenet["features.0.0.weight"])


def test_augmentation_switches(tiny_pack):
    pack = FacePack(tiny_pack)
    mean, std = (0.5,) * 3, (0.5,) * 3
    plain = FaceDataset(pack, pack.indices("train"), 64, mean, std, AugmentConfig(enabled=False))
    assert torch.equal(plain[0][0], plain[0][0])
    torch.manual_seed(0)
    augmented = FaceDataset(pack, pack.indices("train"), 64, mean, std, AugmentConfig())
    assert not torch.equal(augmented[0][0], plain[0][0])


def test_a_run_on_both_sets_records_its_mix(tiny_pack, tmp_path):
    run = train(_config(tiny_pack, tmp_path / "mixed", epochs=1, mix={"utkface": 0.5, "fairface": 0.5}))
    assert json.loads((run / "train_config.json").read_text())["mix"] == {"utkface": 0.5, "fairface": 0.5}
    row = (run / "history.csv").read_text().splitlines()
    history = dict(zip(row[0].split(","), row[1].split(",")))
    assert history["n_utkface"] == history["n_fairface"]  # half of the epoch each
    val = json.loads((run / "val_metrics.json").read_text())
    assert {"utkface", "fairface"} <= set(val) and "age_group_exact" in val["fairface"]


def test_mix_flag_is_checked():
    from training.train import parse_mix

    assert parse_mix("utkface=0.6,fairface=0.4") == {"utkface": 0.6, "fairface": 0.4}
    with pytest.raises(SystemExit, match="--mix"):
        parse_mix("imdb=1")


def test_layer_decay_slows_the_stages_nearest_the_input():
    from demo.checkpoint import build_from_config
    from training.train import make_optimizer

    cfg = TrainConfig(model="b", lr=1e-2, finetune_lr=1e-3, layer_decay=0.5, device="cpu")
    model = build_from_config(cfg.model_config())
    optimizer, _ = make_optimizer(cfg, model, stage=2, steps_per_epoch=10)
    rates = [group["initial_lr"] for group in optimizer.param_groups]
    # The heads, then dlib's six stages from the top (last level) down to the stem.
    assert rates == pytest.approx([1e-2, 1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 3.125e-5])
    stem = {id(p) for p in model.stages[0].parameters()}
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == stem
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_cpu_speed_options_train_the_same_model(tiny_pack, tmp_path):
    # bf16 autocast and channels_last on the CPU: a real run that still saves a model that loads.
    run = train(_config(tiny_pack, tmp_path / "fast", epochs=1, max_steps=2, amp=True, channels_last=True))
    assert load_model(run).config.input_size == 48
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert json.loads((run / "train_config.json").read_text())["amp"] is native
