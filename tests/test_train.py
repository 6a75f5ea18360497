"""A real, tiny training run: two steps on a handful of faces, save, reload, resume; every recipe."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from demo.checkpoint import build_from_config, load_model
from demo.models import ARCHITECTURES
from tests.conftest import pretrained_file
from training.data.dataset import AugmentConfig, FaceDataset
from training.data.pack import FacePack
from training.fit.config import TrainConfig
from training.fit.recipes import RECIPES
from training.fit.trainer import fit as train
from training.train import main


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
    # The weights as training left them (resume.pt, torch's own format; one epoch, so also the best)
    # answer exactly as the model folder read back from safetensors does.
    trained = build_from_config(c)
    trained.load_state_dict(torch.load(run / "resume.pt", weights_only=True)["model"])
    with torch.inference_mode():
        expected = trained.eval()(x)
        reloaded = loaded.model(x.contiguous(memory_format=torch.channels_last))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(expected, reloaded))
    # The calibration fitted on validation is in the config the app reads.
    val = json.loads((run / "val_metrics.json").read_text())
    assert c.range_kind == val["range_kind"] == "spread"
    assert (c.range_knots, c.range_below, c.range_above) == tuple(
        tuple(val["range_rule"][k]) for k in ("knots", "below", "above"))
    assert c.gender_unsure_below == val["gender_unsure_below"]
    # The range is also measured on faces it was not fitted on (each half's range fitted on the other half).
    assert {"all"} <= set(next(iter(val["range_cross_fitted"].values())))


def test_a_one_process_run_reproduces_itself_bit_for_bit(tiny_pack, tmp_path):
    # Augmentation and dropout on: every random draw comes from the seeds.
    runs = [train(_config(tiny_pack, tmp_path / name, epochs=2, dropout=0.3)) for name in ("first", "second")]
    first, second = (torch.load(run / "resume.pt", weights_only=True)["model"] for run in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_each_process_draws_its_own_augmentations_and_dropout(tiny_pack):
    from training.fit.trainer import seed_epoch

    pack = FacePack(tiny_pack)
    faces = FaceDataset(pack, pack.indices("train"), 48, (0.5,) * 3, (0.25,) * 3, AugmentConfig())
    dropout = torch.nn.Dropout(0.5)

    def draws(epoch: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed_epoch(0, epoch, rank)  # as the trainer seeds each process's epoch
        return torch.stack([faces[k][0] for k in range(4)]), dropout(torch.ones(64))

    rank0, rank1, again = draws(0, 0), draws(0, 1), draws(0, 0)
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[1], rank1[1])
    assert torch.equal(rank0[0], again[0]) and torch.equal(rank0[1], again[1])
    assert not torch.equal(draws(1, 0)[0], rank0[0])  # and each epoch its own


def test_ema_by_hand():
    from training.fit.trainer import make_ema

    layer = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(TrainConfig(device="cpu", ema=0.75), layer)
    for value in (4.0, 8.0, 0.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        ema.update_parameters(layer)
    # The first update copies; then 0.75 of the average stays: 0.75 * 4 + 0.25 * 8 = 5, then 0.75 * 5 + 0 = 3.75.
    assert ema.module.weight.item() == pytest.approx(3.75)
    assert make_ema(TrainConfig(device="cpu"), layer) is None
    with pytest.raises(ValueError, match="--ema must be"):
        TrainConfig(device="cpu", ema=1.0)


def test_an_ema_run_keeps_its_average_and_resumes_exactly(tiny_pack, tmp_path, monkeypatch):
    import csv

    import training.fit.trainer as trainer

    straight = train(_config(tiny_pack, tmp_path / "straight", epochs=2, ema=0.5))
    final = torch.load(straight / "resume.pt", weights_only=True)
    assert any(not torch.equal(final["ema"]["module." + k], v) for k, v in final["model"].items())  # an average

    real_save = trainer.save_resume

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # right after the first epoch was saved

    monkeypatch.setattr(trainer, "save_resume", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_pack, tmp_path / "resumed", epochs=2, ema=0.5))
    first = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["ema"]
    monkeypatch.setattr(trainer, "save_resume", real_save)
    train(_config(tiny_pack, tmp_path / "resumed", epochs=2, ema=0.5), resume=True)
    again = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["ema"]
    assert all(torch.equal(final["ema"][k], again[k]) for k in again)
    # The model kept is the average of the epoch with the best validation loss, not the weights.
    with (straight / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(row["val_loss"]) for row in rows]
    # The weights themselves are validated beside the average, and score otherwise.
    assert all(float(row["raw_val_loss"]) != float(row["val_loss"]) for row in rows)
    best = (first, final["ema"])[losses.index(min(losses))]
    kept = load_file(straight / "model.safetensors")
    assert all(torch.equal(v, best["module." + k]) for k, v in kept.items())


def test_resume_continues_exactly_where_it_stopped(tiny_pack, tmp_path, monkeypatch):
    import training.fit.trainer as trainer

    straight = train(_config(tiny_pack, tmp_path / "straight", epochs=2))

    real_save = trainer.save_resume
    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C came right after the first epoch was saved

    monkeypatch.setattr(trainer, "save_resume", save_then_interrupt)
    with pytest.raises(SystemExit, match="--resume"):
        main(["--model", "a", "--data", str(tiny_pack), "--out", str(tmp_path / "resumed"), "--input-size", "48",
              "--widths", "8,16", "--epochs", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu"])
    assert (tmp_path / "resumed" / "history.csv").read_text().count("\n") == 2  # header + epoch 1
    monkeypatch.setattr(trainer, "save_resume", real_save)
    main(["--model", "a", "--out", str(tmp_path / "resumed"), "--resume"])

    assert (tmp_path / "resumed" / "history.csv").read_text().count("\n") == 3
    w1 = torch.load(straight / "resume.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["model"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_resume_keeps_the_saved_settings_but_may_change_threads(tmp_path):
    from training.train import parse_args

    saved = TrainConfig(model="b", out=str(tmp_path), epochs=7, input_size=128, threads=1)
    (tmp_path / "train_config.json").write_text(json.dumps(saved.to_dict()))
    cfg, resume = parse_args(["--model", "b", "--out", str(tmp_path), "--resume", "--threads", "2", "--epochs", "9"])
    assert resume and cfg == dataclasses.replace(saved, threads=2)


def test_resume_without_a_run_says_so(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"model": "a", "out": str(tmp_path)}))
    with pytest.raises(SystemExit, match="nothing to resume"):
        main(["--model", "a", "--out", str(tmp_path), "--resume"])


def test_single_task_run_records_its_task_and_serves_only_it(tiny_pack, tmp_path):
    from training.fit.losses import LossWeights

    run = train(_config(tiny_pack, tmp_path / "age_only", epochs=1, max_steps=1, loss=LossWeights(gender=0.0)))
    loaded = load_model(run)
    assert loaded.config.tasks == ("age",)
    prediction = loaded.predict(torch.zeros(1, 3, 48, 48))
    assert prediction.age is not None and prediction.p_female is None  # the untrained gender head is not shown


def test_model_b_two_stages(tiny_pack, tmp_path):
    imagenet_file = pretrained_file("efficientnet_lite0")
    cfg = _config(tiny_pack, tmp_path / "b", model="b", architecture="efficientnet_lite0", input_size=64, epochs=2,
                  stage1_epochs=1, finetune_stages=2, backbone_weights=str(imagenet_file))
    run = train(cfg)
    stages = [line.split(",")[1] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert stages == ["1", "2"]
    # Stage 1 leaves the backbone as loaded from ImageNet; only the top stages move in stage 2.
    weights = load_file(run / "model.safetensors")
    imagenet = torch.load(imagenet_file, weights_only=True)
    assert torch.equal(weights["backbone.0.0.weight"], imagenet["_conv_stem.weight"])


def test_init_from_continues_a_trained_model_with_reweighted_ages(tiny_pack, tmp_path, caplog):
    from demo.checkpoint import build_from_config
    from training.fit.trainer import load_trained

    caplog.set_level("INFO")
    first = train(_config(tiny_pack, tmp_path / "first", epochs=1))
    # A new run starts from every weight of the first, heads included.
    model = build_from_config(_config(tiny_pack, tmp_path / "x").model_config())
    load_trained(model, _config(tiny_pack, tmp_path / "x").model_config(), first)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in load_file(first / "model.safetensors").items())
    more = train(_config(tiny_pack, tmp_path / "more", epochs=1, init_from=str(first),
                         loss=dataclasses.replace(TrainConfig().loss, age_reweight="lds")))
    assert "age loss weights (lds) at ages" in caplog.text
    assert not torch.equal(load_file(more / "model.safetensors")["heads.age.1.weight"],
                           load_file(first / "model.safetensors")["heads.age.1.weight"])
    with pytest.raises(ValueError, match="is a scratch_cnn .* not the scratch_cnn"):
        train(_config(tiny_pack, tmp_path / "wider", epochs=1, widths=(8, 32), init_from=str(first)))


def test_augmentation_switches(tiny_pack):
    pack = FacePack(tiny_pack)
    mean, std = (0.5,) * 3, (0.5,) * 3
    plain = FaceDataset(pack, pack.indices("train"), 64, mean, std, AugmentConfig(enabled=False))
    assert torch.equal(plain[0][0], plain[0][0])
    torch.manual_seed(0)
    augmented = FaceDataset(pack, pack.indices("train"), 64, mean, std, AugmentConfig())
    assert not torch.equal(augmented[0][0], plain[0][0])


def test_faces_from_the_wild_are_off_by_default_and_each_changes_the_face(tiny_pack):
    from torchvision.transforms import v2

    # Runs before round six (no such fields in their config) augment exactly as they did.
    assert [type(t) for t in AugmentConfig().transform().transforms] == [
        v2.RandomHorizontalFlip, v2.RandomAffine, v2.ColorJitter]
    crop = FaceDataset(FacePack(tiny_pack), FacePack(tiny_pack).indices("train"), 64, (0,) * 3, (1,) * 3).crop(0)
    only = dict(flip=False, rotate_degrees=0.0, scale_jitter=0.0, shift_jitter=0.0, brightness=0.0, contrast=0.0)
    for name in ("blur", "jpeg", "low_light", "occlude"):
        torch.manual_seed(0)
        changed = AugmentConfig(**only, **{name: 1.0}).transform()(crop)
        assert changed.dtype == torch.uint8 and changed.shape == crop.shape
        assert not torch.equal(changed, crop), name
    torch.manual_seed(0)
    dark = AugmentConfig(**only, low_light=1.0).transform()(crop)
    assert dark.float().mean() < crop.float().mean() and dark.max() == crop.max()  # mid-tones down, highlights kept
    hidden = AugmentConfig(**only, occlude=1.0).transform()(crop)
    assert 0.01 < (hidden != crop).any(dim=0).float().mean() < 0.2  # a rectangle of a few per cent


def test_a_run_on_both_sets_records_its_mix(tiny_pack, tmp_path):
    run = train(_config(tiny_pack, tmp_path / "mixed", epochs=1, mix={"utkface": 0.5, "fairface": 0.5}))
    assert json.loads((run / "train_config.json").read_text())["mix"] == {"utkface": 0.5, "fairface": 0.5}
    row = (run / "history.csv").read_text().splitlines()
    history = dict(zip(row[0].split(","), row[1].split(",")))
    assert history["n_utkface"] == history["n_fairface"]  # half of the epoch each
    val = json.loads((run / "val_metrics.json").read_text())
    assert {"utkface", "fairface"} <= set(val) and "age_group_exact" in val["fairface"]


def test_mix_flag_is_checked(capsys):
    from training.fit.config import parse_mix

    assert parse_mix("utkface=0.6,fairface=0.4") == {"utkface": 0.6, "fairface": 0.4}
    with pytest.raises(SystemExit):
        main(["--model", "a", "--mix", "imdb=1"])
    assert "--mix takes NAME=SHARE pairs" in capsys.readouterr().err


def test_layer_decay_slows_the_stages_nearest_the_input():
    from demo.checkpoint import build_from_config
    from training.fit.recipes import make_optimizer

    cfg = TrainConfig(model="b", lr=1e-2, finetune_lr=1e-3, layer_decay=0.5, device="cpu")
    model = build_from_config(cfg.model_config())
    optimizer, _ = make_optimizer(cfg, model, RECIPES["two_stage"].stage_at(cfg, 1), steps_per_epoch=10)
    rates = [group["initial_lr"] for group in optimizer.param_groups]
    # The heads, then dlib's six stages from the top (last level) down to the stem.
    assert rates == pytest.approx([1e-2, 1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 3.125e-5])
    stem = {id(p) for p in model.stages[0].parameters()}
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == stem
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_start_decay_pulls_the_trunk_back_to_where_it_began():
    from training.fit.recipes import AdamWTowardsStart

    trunk, head = torch.nn.Parameter(torch.full((3,), 2.0)), torch.nn.Parameter(torch.full((3,), 2.0))
    start = {trunk: torch.zeros(3) + 1.0}
    optimizer = AdamWTowardsStart([{"params": [trunk], "lr": 0.1, "start_decay": 2.0, "weight_decay": 0.0},
                                   {"params": [head], "lr": 0.1}], start, weight_decay=0.5)
    trunk.grad, head.grad = torch.zeros(3), torch.zeros(3)  # no gradient: only the decays move the weights
    optimizer.step()
    assert torch.allclose(trunk.detach(), torch.full((3,), 2.0 - 0.2 * (2.0 - 1.0)))  # a fifth of the way to 1
    assert torch.allclose(head.detach(), torch.full((3,), 2.0 * (1 - 0.1 * 0.5)))  # AdamW's own, towards 0


def test_an_anchored_group_weighted_run_resumes_exactly(tiny_pack, tmp_path, monkeypatch):
    """--start-decay's anchor is made afresh on --resume (dlib's weights, not the saved ones), and
    --gender-groups' weights come from the history: an interrupted run ends where a straight one does."""
    import csv

    import training.fit.trainer as trainer
    from training.fit.gender_groups import COLUMN
    from training.fit.losses import LossWeights

    def run(out):
        return _config(tiny_pack, out, model="b", architecture="dlib_resnet", input_size=104, epochs=3,
                       stage1_epochs=1, start_decay=50.0, finetune_lr=1e-3, loss=LossWeights(gender_groups=2.0),
                       augment=AugmentConfig(blur=0.5, jpeg=0.5, low_light=0.5, occlude=0.5),
                       backbone_weights=str(pretrained_file("dlib_resnet")))

    straight = train(run(tmp_path / "straight"))
    real_save = trainer.save_resume

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        if len(args[5].history) == 2:
            raise KeyboardInterrupt  # after the first fine-tuning epoch

    monkeypatch.setattr(trainer, "save_resume", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(run(tmp_path / "resumed"))
    monkeypatch.setattr(trainer, "save_resume", real_save)
    train(run(tmp_path / "resumed"), resume=True)
    w1 = torch.load(straight / "resume.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "resumed" / "resume.pt", weights_only=True)["model"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    with (straight / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    groups = [k for k in rows[0] if k.startswith(COLUMN)]
    assert COLUMN + "fairface_Black" in groups or COLUMN + "utkface_White" in groups
    assert all(float(row[k]) >= 0 for row in rows for k in groups if row[k] != "nan")


def test_a_student_learns_from_a_teachers_answers_kept_for_a_resume(tiny_pack, tmp_path, monkeypatch):
    import training.fit.distill as distill
    from training.evaluation.metrics import collect_outputs
    from training.fit import distributed

    teacher = train(_config(tiny_pack, tmp_path / "teacher", epochs=1, max_steps=2))
    student = train(_config(tiny_pack, tmp_path / "student", epochs=1, widths=(4, 8), distill_from=str(teacher),
                            distill_weight=0.7))
    saved = torch.load(student / distill.TEACHER_NAME, weights_only=True)
    pack = FacePack(tiny_pack)
    faces = pack.indices("train")
    assert torch.equal(saved["indices"], torch.from_numpy(faces))
    # The teacher's raw answers on the stored training faces, in their order.
    loaded = load_model(teacher, engine="torch")
    out = collect_outputs(loaded.model, torch.utils.data.DataLoader(FaceDataset(
        pack, faces, 48, loaded.config.mean, loaded.config.std), batch_size=4), "cpu")
    assert torch.allclose(saved["age_probs"], out.age_logits.softmax(-1), atol=1e-5)
    assert torch.allclose(saved["p_female"], torch.sigmoid(out.gender_logit), atol=1e-5)
    # A resumed run reads them back instead of running the teacher again.
    monkeypatch.setattr(distill, "collect_outputs", lambda *a, **k: pytest.fail("the teacher ran again"))
    again = distill.teacher_for(str(teacher), pack, faces, loaded.config.num_age_bins, student, "cpu",
                                distributed.ONE_PROCESS)
    assert torch.equal(again.age_probs, saved["age_probs"])
    # The loss by hand: KL to the teacher's distribution plus BCE to its P(female).
    probs = torch.tensor([[0.5, 0.5, 0.0]])
    one = distill.Teacher(probs, torch.tensor([0.25]))
    logits = torch.log(torch.tensor([[0.25, 0.75, 1e-9]]))
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    bce = -(0.25 * math.log(0.5) + 0.75 * math.log(0.5))
    assert one.loss(torch.tensor([0]), logits, torch.tensor([0.0])).item() == pytest.approx(kl + bce, rel=1e-5)


def test_cpu_speed_options_train_the_same_model(tiny_pack, tmp_path):
    # bf16 autocast and channels_last on the CPU: a real run that still saves a model that loads.
    run = train(_config(tiny_pack, tmp_path / "fast", epochs=1, max_steps=2, amp=True, channels_last=True))
    assert load_model(run).config.input_size == 48
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert json.loads((run / "train_config.json").read_text())["amp"] is native


@pytest.fixture(scope="module")
def trained_trunks(tiny_pack, tmp_path_factory):
    """Per architecture, a model trained for two steps from scratch: the weights two_stage fine-tunes here.

    (The real pretrained files are loaded in test_models and test_dlib_port; these keep every pair offline.)
    """
    runs = {}
    for name, arch in ARCHITECTURES.items():
        runs[name] = train(_config(tiny_pack, tmp_path_factory.mktemp(name), architecture=name, recipe="from_scratch",
                                   input_size=max(64, arch.min_input_size), widths=(8, 16), epochs=1, max_steps=2,
                                   limit=8))
    return runs


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_trains_under_every_recipe(name, trained_trunks, tiny_pack, tmp_path):
    # from_scratch ran in the fixture; two_stage starts from its trunk, heads first, then the top stage.
    start = trained_trunks[name]
    assert json.loads((start / "train_config.json").read_text())["recipe"] == "from_scratch"
    cfg = _config(tiny_pack, tmp_path / "two", architecture=name, recipe="two_stage", widths=(8, 16),
                  input_size=max(64, ARCHITECTURES[name].min_input_size), epochs=2, stage1_epochs=1, finetune_stages=1,
                  limit=8, backbone_weights=str(start / "model.safetensors"))
    run = train(cfg)
    before = load_file(start / "model.safetensors")
    after = torch.load(run / "resume.pt", weights_only=True)["model"]  # the last epoch's weights (not the best)
    trunk = [k for k in before if not k.startswith("heads.")]
    assert any(not torch.equal(before[k], after[k]) for k in trunk)  # the top stage moved in stage 2...
    model = load_model(run).model
    first_stage = {n for n, p in model.named_parameters() if any(p is q for q in model.stages[0].parameters())}
    assert first_stage and all(torch.equal(before[k], after[k]) for k in first_stage)  # ...the stem did not
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in history[1:]] == ["1", "2"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"architecture": "scratch_cnn", "recipe": "two_stage"}, "scratch_cnn has none to download"),
    ({"model": "b", "architecture": "scratch_cnn"}, "use --recipe from_scratch"),
    ({"architecture": "dlib_resnet", "input_size": 96}, "at least 104 px"),
    ({"recipe": "from_scratch", "backbone_weights": "x.pth"}, "--backbone-weights would be ignored"),
    ({"recipe": "from_scratch", "start_decay": "1"}, "--recipe from_scratch has none"),
    ({"distill_from": "no_such_model"}, "--distill-from no_such_model is not a model folder"),
    ({"mixup": "-0.2"}, "--mixup and --mixup-years must be 0"),
    ({"recipe": "two_stage", "architecture": "dlib_resnet", "backbone_weights": "nowhere.dat"}, "does not exist"),
    ({"recipe": "transfer"}, "unknown --recipe 'transfer'"),
    ({"architecture": "vgg"}, "unknown architecture 'vgg'"),
    ({"init_from": "no_such_model"}, "is not a model folder"),
    ({"init_from": ".", "recipe": "two_stage", "architecture": "dlib_resnet", "backbone_weights": "x.dat"},
     "keep one"),
])
def test_an_invalid_combination_is_refused_before_any_data_is_read(settings, message, tmp_path):
    args = ["--data", str(tmp_path / "no_pack_here"), "--out", str(tmp_path / "run")]
    for key, value in {"model": "a", **settings}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    with pytest.raises(SystemExit, match=message):
        main(args)
    assert not (tmp_path / "run").exists()


def test_the_command_line_is_made_from_the_config(tmp_path, capsys):
    from training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("loss", "augment", "num_workers"):
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    for flag in ("--workers", "--age-weight", "--no-augment", "--augment-rotate-degrees"):
        assert flag in text
    cfg, resume = parse_args(["--model", "b", "--no-augment", "--age-weight", "0.5", "--widths", "8,16",
                              "--mix", "utkface=1", "--max-minutes", "3", "--no-amp"])
    assert not resume and cfg.recipe == "two_stage" and cfg.architecture == "dlib_resnet" and cfg.input_size == 128
    assert not cfg.augment.enabled and cfg.loss.age == 0.5 and cfg.widths == (8, 16) and cfg.mix == {"utkface": 1.0}
    assert cfg.max_minutes == 3.0 and cfg.amp is False
    # A saved config (or part of one) read back with --config; flags beside it win.
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    again, _ = parse_args(["--config", str(tmp_path / "run.json")])
    assert again == cfg
    (tmp_path / "part.json").write_text(json.dumps({"model": "a", "epochs": 3, "augment": {"flip": False}}))
    part, _ = parse_args(["--config", str(tmp_path / "part.json"), "--epochs", "4"])
    assert part.epochs == 4 and part.augment.flip is False and part.augment.enabled and part.recipe == "from_scratch"
    # Test-time flip: a mode by name; a run saved when it was on or off (true / false) reads as "on" / "off".
    assert parse_args(["--model", "a", "--flip", "gender"])[0].flip == "gender"
    (tmp_path / "old.json").write_text(json.dumps({"model": "b", "flip": True}))
    assert parse_args(["--config", str(tmp_path / "old.json")])[0].flip == "on"
    with pytest.raises(SystemExit, match="--flip must be one of off, gender, on"):
        parse_args(["--model", "a", "--flip", "sideways"])
    (tmp_path / "bad.json").write_text(json.dumps({"epochz": 3}))
    with pytest.raises(SystemExit, match="unknown TrainConfig setting"):
        parse_args(["--config", str(tmp_path / "bad.json")])


def test_calibrate_refits_a_run_without_touching_its_weights(tiny_pack, tmp_path, capsys):
    from training.calibrate import main as calibrate_main

    run = train(_config(tiny_pack, tmp_path / "run", epochs=1, age_adjust_tolerance=0.0))
    weights = load_file(run / "model.safetensors")
    assert load_model(run).config.age_logit_offsets == ()
    calibrate_main([str(run), "--age-adjust-tolerance", "100"])  # any adjustment allowed: tau = 1
    config = load_model(run).config
    val = json.loads((run / "val_metrics.json").read_text())
    assert val["age_adjustment"] == 1.0 and len(config.age_logit_offsets) == config.num_age_bins
    assert json.loads((run / "train_config.json").read_text())["age_adjust_tolerance"] == 100
    assert all(torch.equal(v, weights[k]) for k, v in load_file(run / "model.safetensors").items())
    assert "logit adjustment 1" in capsys.readouterr().out
    # Flip averaging turned on afterwards: fitted with it, served with it, and the run's settings say so.
    calibrate_main([str(run), "--flip", "on"])
    assert load_model(run).config.flip == "on" and json.loads((run / "train_config.json").read_text())["flip"] == "on"
    flipped = json.loads((run / "val_metrics.json").read_text())
    assert flipped != val  # the same faces, averaged with their mirrors
    # The gender answer alone: the age calibration is the one fitted without flip, the gender one is not.
    calibrate_main([str(run), "--flip", "gender"])
    gender_only = json.loads((run / "val_metrics.json").read_text())
    assert load_model(run).config.flip == "gender"
    for name, part in val.items():  # every age number as fitted and measured without flip, the gender ones moved
        if isinstance(part, dict) and "gender_nll" in part:  # a data set's metrics
            assert {k: v for k, v in gender_only[name].items() if k.startswith("age")} == \
                {k: v for k, v in part.items() if k.startswith("age")}
            assert gender_only[name]["gender_nll"] != part["gender_nll"]
        elif name != "gender_temperature":
            assert gender_only[name] == part, name
    # The median as the age shown: fitted around it, saved, and kept in the run's settings.
    calibrate_main([str(run), "--age-estimate", "median"])
    assert load_model(run).config.range_rule.estimate == "median"
    assert json.loads((run / "train_config.json").read_text())["age_estimate"] == "median"
    assert json.loads((run / "val_metrics.json").read_text())["range_rule"]["estimate"] == "median"
    # The belt: multiples by true age, saved as such, the range around the same median.
    calibrate_main([str(run), "--range-rule", "belt"])
    rule = load_model(run).config.range_rule
    assert rule.multiples_at == "age" and rule.estimate == "median"
    assert json.loads((run / "val_metrics.json").read_text())["range_rule"]["multiples_at"] == "age"


def test_mixup_partners_are_other_faces_near_in_age():
    from training.data.ages import labelled_age
    from training.fit.mixup import draw_mix

    torch.manual_seed(0)
    ages = torch.tensor([1, 2, 30, 31, 32, 80, 10, 20])
    low, high = ages.clone(), ages.clone()
    low[6], high[6] = 10, 19  # a FairFace group: its mean year, 14.5
    assert labelled_age(low, high, 1, 116)[6].item() == pytest.approx(14.5)
    for _ in range(50):
        mix = draw_mix(0.2, 3.0, low, high, 1)
        assert 0.0 <= mix.lam <= 1.0
        assert not (mix.partner == torch.arange(len(ages))).any()  # never a face with itself
        assert mix.partner[0] == 1 and mix.partner[1] == 0  # the babies, with each other
        assert set(mix.partner[2:5].tolist()) <= {2, 3, 4}  # the thirty-somethings, among themselves
    # The 80-year-old has no one within reach of 3 years: it gets a partner all the same.
    partners = {draw_mix(0.2, 3.0, low, high, 1).partner[5].item() for _ in range(50)}
    assert partners and 5 not in partners
    # Without --mixup-years any other face may be drawn.
    drawn = {draw_mix(0.2, 0.0, low, high, 1).partner[0].item() for _ in range(200)}
    assert drawn == set(range(1, len(ages)))


def test_a_mixup_step_blends_the_faces_and_their_losses(tiny_pack, monkeypatch):
    import training.fit.trainer as trainer
    from training.fit.losses import multitask_loss
    from training.fit.mixup import Mix

    class Linear(torch.nn.Module):  # a network small enough to check by hand
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 116 + 1)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            return out[:, :-1], out[:, -1]

    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    low, high = torch.tensor([3, 30, 10, 60]), torch.tensor([3, 30, 19, 60])
    gender, race, dataset = torch.tensor([0, 1, 1, 0]), torch.zeros(4, dtype=torch.long), torch.zeros(4).long()
    mix = Mix(0.3, torch.tensor([1, 0, 3, 2]))
    monkeypatch.setattr(trainer, "draw_mix", lambda *a, **k: mix)
    cfg = _config(tiny_pack, "unused", mixup=0.2, amp=False, channels_last=False)
    model = Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss, age_logits, _ = trainer.train_step(cfg, model, (x, low, high, gender, race, dataset), optimizer, scheduler, 1)
    blended = 0.3 * x + 0.7 * x[mix.partner]
    with torch.no_grad():
        ages, genders = model(blended)
        own, _ = multitask_loss(ages, genders, low, high, gender, 1, cfg.loss)
        theirs, _ = multitask_loss(ages, genders, low[mix.partner], high[mix.partner], gender[mix.partner], 1,
                                   cfg.loss)
    assert torch.allclose(age_logits, ages, atol=1e-6)
    assert loss.item() == pytest.approx(0.3 * own.item() + 0.7 * theirs.item(), rel=1e-5)


def test_a_run_with_age_near_mixup_trains_and_records_it(tiny_pack, tmp_path):
    run = train(_config(tiny_pack, tmp_path / "mixed", epochs=1, max_steps=2, mixup=0.2, mixup_years=5.0))
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["mixup"], saved["mixup_years"]) == (0.2, 5.0)
    assert load_model(run).config.input_size == 48
