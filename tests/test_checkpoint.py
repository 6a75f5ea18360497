import json
import shutil

import pytest
import torch

from demo.checkpoint import (
    ModelConfig,
    ModelLoadError,
    build_from_config,
    forward_with_flip,
    load_model,
    read_config,
    save_model,
)


def _tiny(folder, architecture="scratch_cnn", **kwargs):
    arch_kwargs = {"widths": [4, 8]} if architecture == "scratch_cnn" else {}
    config = ModelConfig(name="tiny", architecture=architecture, input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                         crop_size=128, crop_margin=0.0, arch_kwargs=arch_kwargs, **kwargs)
    torch.manual_seed(0)
    model = build_from_config(config)
    save_model(model, config, folder)
    return model, config


def test_round_trip_keeps_config_and_outputs(tmp_path):
    model, config = _tiny(tmp_path, age_temperature=1.7)
    loaded = load_model(tmp_path)
    assert loaded.config == config
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = model.eval()(x)
        got = loaded.model(x)
    # Same weights bit for bit; the outputs only up to rounding, as the loader serves in channels_last.
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.allclose(expected[0], got[0], atol=1e-5) and torch.allclose(expected[1], got[1], atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path)
    _tiny(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing .*model.safetensors"):
        load_model(tmp_path)


def test_corrupt_weights_are_named(tmp_path):
    _tiny(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="model.safetensors is not a readable safetensors file"):
        load_model(tmp_path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    _tiny(tmp_path / "a")
    _tiny(tmp_path / "b", architecture="mobilenet_v2")
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(tmp_path / "a")


def test_config_with_unknown_or_broken_fields_is_refused(tmp_path):
    _tiny(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**data, "surprise": 1}))
    with pytest.raises(ModelLoadError, match="unknown keys"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid model config"):
        read_config(tmp_path)


def test_a_pickle_beside_the_weights_is_never_read(tmp_path, monkeypatch):
    _tiny(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle that must not be read")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    load_model(tmp_path)


def test_age_logit_offsets_are_kept_and_served(tmp_path):
    offsets = tuple([0.0] * 79 + [30.0] + [0.0] * 36)  # a huge push towards age 80
    _tiny(tmp_path / "plain")
    _tiny(tmp_path / "pushed", age_logit_offsets=offsets)
    pushed = load_model(tmp_path / "pushed")
    assert pushed.config.age_logit_offsets == offsets  # read back as saved (a tuple, as the dataclass holds it)
    x = torch.randn(2, 3, 32, 32)
    assert load_model(tmp_path / "plain").predict(x).age.years.max() < 79
    assert torch.allclose(pushed.predict(x).age.years, torch.full((2,), 80.0), atol=0.01)


class LeftLeaning(torch.nn.Module):
    """Answers from the left half of the face only, so a face and its mirror image get different answers."""

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return left[:, None] * torch.arange(5.0), left


def test_flip_modes_average_what_they_name():
    model, x = LeftLeaning(), torch.randn(3, 3, 32, 32)
    age, gender = model(x)
    age_m, gender_m = model(x.flip(-1))
    assert not torch.allclose(gender, gender_m)
    assert all(torch.equal(a, b) for a, b in zip(forward_with_flip(model, x, "off"), (age, gender)))
    age_g, gender_g = forward_with_flip(model, x, "gender")
    age_on, gender_on = forward_with_flip(model, x, "on")
    mean_gender = (gender + gender_m) / 2
    assert torch.allclose(age_g, age) and torch.allclose(gender_g, mean_gender)  # the face's own age distribution
    assert torch.allclose(age_on.softmax(-1), (age.softmax(-1) + age_m.softmax(-1)) / 2)  # the mean distribution
    assert torch.allclose(gender_on, mean_gender)


def test_flip_of_older_configs_is_read_and_bad_modes_refused(tmp_path):
    _tiny(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    for saved, mode in ((True, "on"), (False, "off"), ("gender", "gender")):
        (tmp_path / "config.json").write_text(json.dumps({**data, "flip": saved}))
        assert read_config(tmp_path).flip == mode
    (tmp_path / "config.json").write_text(json.dumps({**data, "flip": "sideways"}))
    with pytest.raises(ModelLoadError, match="flip must be one of off, gender, on"):
        read_config(tmp_path)


def test_a_spread_rules_power_is_saved_and_older_spread_configs_read_it_as_1(tmp_path):
    from demo.heads import SpreadRule, decode_age

    _tiny(tmp_path)
    config = read_config(tmp_path)
    squared = SpreadRule(knots=(1.0, 40.0), below=(0.3, 0.2), above=(0.3, 0.25), power=2.0)
    config.set_range_rule(squared)
    (tmp_path / "config.json").write_text(config.to_json())
    data = json.loads(config.to_json())
    assert data["range_spread_power"] == 2.0
    assert read_config(tmp_path).range_rule == squared
    # A config written before the power existed reads its multiples as they were fitted: on the spread itself.
    del data["range_spread_power"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    rule = read_config(tmp_path).range_rule
    assert rule.power == 1.0 and rule.below == squared.below
    logits = -0.5 * ((torch.arange(1, 117.0) - 40.0) / 6.0) ** 2  # answered 40, spread 6 years
    assert decode_age(logits[None], 1, rule).low.item() == round(40 - 0.2 * 6)
    assert decode_age(logits[None], 1, squared).low.item() == round(40 - 0.2 * 36)


def test_a_belt_rule_is_saved_and_older_spread_configs_read_their_multiples_at_the_estimate(tmp_path):
    from demo.heads import SpreadRule

    _tiny(tmp_path)
    config = read_config(tmp_path)
    belt = SpreadRule(knots=(1.0, 40.0), below=(0.5, 1.2), above=(0.5, 1.6), multiples_at="age")
    config.set_range_rule(belt)
    (tmp_path / "config.json").write_text(config.to_json())
    assert read_config(tmp_path).range_rule == belt
    data = json.loads(config.to_json())
    del data["range_multiples_at"]  # as every config written before the belt
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert read_config(tmp_path).range_rule.multiples_at == "estimate"
    (tmp_path / "config.json").write_text(json.dumps({**data, "range_multiples_at": "truth"}))
    with pytest.raises(ModelLoadError, match="multiples_at must be one of estimate, age"):
        read_config(tmp_path)


def test_a_median_estimate_is_saved_served_and_older_configs_read_the_mean(tmp_path):
    from demo.heads import SpreadRule, point_estimate

    _tiny(tmp_path)
    config = read_config(tmp_path)
    assert config.age_estimate == "mean"  # as every config written before it (no key) reads
    config.set_range_rule(SpreadRule(estimate="median"))
    (tmp_path / "config.json").write_text(config.to_json())
    loaded = load_model(tmp_path)
    assert loaded.config.age_estimate == "median" and loaded.config.range_rule.estimate == "median"
    pred = loaded.predict(torch.rand(3, 3, loaded.config.input_size, loaded.config.input_size))
    assert torch.allclose(pred.age.years, point_estimate(pred.age.probs, 1, "median"))
    data = json.loads(config.to_json())
    for bad, message in (({"age_estimate": "mode"}, "age_estimate must be one of mean, median"),
                         ({"range_kind": "percentiles"}, "percentile ranges are read around the mean")):
        (tmp_path / "config.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(ModelLoadError, match=message):
            read_config(tmp_path)


def test_configs_written_before_the_spread_rule_read_their_percentiles_as_before(tmp_path):
    from demo.heads import RangeRule, SpreadRule, decode_age

    _tiny(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["range_kind"] == "spread" and read_config(tmp_path).range_rule == SpreadRule()
    old = {k: v for k, v in data.items() if not k.startswith("range_") or k in ("range_coverage",)}
    old.update(range_starts=[1.0, 40.0], range_lower=[0.1, 0.2], range_upper=[0.9, 0.95], age_temperature=1.3)
    old.pop("gender_unsure_below")
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = read_config(tmp_path)
    rule = RangeRule(starts=(1.0, 40.0), lower=(0.1, 0.2), upper=(0.9, 0.95), temperature=1.3)
    assert config.range_kind == "percentiles" and config.range_rule == rule and config.gender_unsure_below == 0.5
    logits = torch.randn(4, 116)
    est = decode_age(logits, 1, config.range_rule)
    probs = torch.softmax(logits / 1.3, dim=-1).cumsum(-1)  # the percentiles of the tempered distribution, by hand
    for i, mean in enumerate(est.years.tolist()):
        lo, hi = (0.1, 0.9) if mean < 40 else (0.2, 0.95)
        assert est.low[i] == int((probs[i] >= lo - 1e-6).float().argmax()) + 1
        assert est.high[i] == int((probs[i] >= hi - 1e-6).float().argmax()) + 1
    (tmp_path / "config.json").write_text(json.dumps({**data, "range_kind": "quantiles"}))
    with pytest.raises(ModelLoadError, match="range_kind must be one of spread, percentiles"):
        read_config(tmp_path)
