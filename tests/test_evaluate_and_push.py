"""Evaluation report and Hub push of a tiny trained run; nothing leaves the machine."""

import json
import re

import pytest
from huggingface_hub import ModelCard

from training import evaluate, push
from training.data import fairface
from training.data.spec import AGE_BANDS, band_name
from training.fit.config import TrainConfig
from training.fit.trainer import fit as train


@pytest.fixture(scope="module")
def run_dir(tiny_pack, tmp_path_factory):
    cfg = TrainConfig(model="a", data=str(tiny_pack), out=str(tmp_path_factory.mktemp("run")), input_size=48,
                      widths=(8, 16), epochs=2, batch_size=4, num_workers=0, device="cpu")
    return train(cfg)


@pytest.fixture(scope="module")
def report(run_dir, tiny_pack, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    evaluate.main([str(run_dir), str(run_dir), "--data", str(tiny_pack), "--split", "test", "--out", str(out)])
    return out


def test_metrics_json(report):
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics) == 2
    m = metrics[0]
    utk, ff = m["utkface"], m["fairface"]
    for key in ("age_mae", "age_cs5", "age_range_coverage", "gender_accuracy", "gender_ece"):
        assert key in utk["overall"]
    assert 0 <= utk["overall"]["age_cs5"] <= 1 and m["cpu_ms_per_face"] > 0
    assert set(utk["by_age_band"]) <= {band_name(b) for b in AGE_BANDS}
    assert sum(g["n"] for g in utk["by_ethnicity"].values()) == utk["overall"]["n"]
    for key in ("age_group_exact", "age_group_within_one", "gender_accuracy", "gender_ece"):
        assert 0 <= ff["overall"][key] <= 1
    assert ff["overall"]["age_group_exact"] <= ff["overall"]["age_group_within_one"]
    assert sum(g["n"] for g in ff["by_race"].values()) == ff["overall"]["n"]
    assert set(ff["by_age_group"]) <= set(fairface.GROUP_NAMES)


def test_report_links_figures_that_exist(report):
    text = (report / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {"utkface_age_scatter.png", "utkface_age_error.png", "utkface_gender.png", "fairface_age_groups.png",
            "fairface_gender_by_group.png", "fairface_age_by_group.png", "fairface_gender.png"} <= set(figures)
    # The same run twice: two rows and two learning-curve figures told apart, not one overwriting the other.
    curves = sorted(f for f in figures if f.startswith("curves_"))
    assert curves == ["curves_1_scratch_cnn.png", "curves_2_scratch_cnn.png"]
    names = [m["model"] for m in json.loads((report / "metrics.json").read_text())]
    assert names[0] != names[1] and all(name.endswith("Model A (CNN from scratch)") for name in names)
    for name in figures:
        assert (report / name).stat().st_size > 5000  # a real PNG, not an empty file
    assert "### By ethnicity" in text and "### By age band" in text and "### By race group" in text
    assert "| model | UTKFace age MAE |" in text and "FairFace age group exact" in text  # side by side


def test_runs_of_one_model_are_labelled_by_their_folders(run_dir, tmp_path):
    for folder, name in (("r4", None), ("r5", None), ("other", "Model C")):
        (tmp_path / folder).mkdir()
        config = json.loads((run_dir / "config.json").read_text())
        (tmp_path / folder / "config.json").write_text(json.dumps(config | ({"name": name} if name else {})))
    assert evaluate.report_labels([tmp_path / "r4", tmp_path / "r5", tmp_path / "other"]) == [
        "r4: Model A (CNN from scratch)", "r5: Model A (CNN from scratch)", "Model C"]
    assert evaluate.report_labels([tmp_path / "r4", tmp_path / "other"]) == ["Model A (CNN from scratch)", "Model C"]


def test_dry_run_stages_exactly_what_would_be_uploaded(run_dir, report, tmp_path):
    stage = tmp_path / "stage"
    push.main([str(run_dir), "--repo-id", "someone/model-a", "--metrics", str(report / "metrics.json"),
               "--dry-run", "--stage", str(stage)])
    names = sorted(p.name for p in stage.iterdir())
    assert names == sorted(["README.md", "config.json", "history.csv", "model.safetensors", "test_metrics.json",
                            "train_config.json", "val_metrics.json"])
    assert (stage / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    card = ModelCard.load(stage / "README.md")
    results = card.data.eval_results
    metrics = json.loads((report / "metrics.json").read_text())[0]
    mae = next(r for r in results if r.metric_type == "mae")
    assert mae.metric_value == pytest.approx(metrics["utkface"]["overall"]["age_mae"], abs=1e-4)
    exact = next(r for r in results if r.metric_name == "Age group accuracy (exact)")
    assert exact.metric_value == pytest.approx(metrics["fairface"]["overall"]["age_group_exact"], abs=1e-4)
    assert card.data.license == "other" and {"UTKFace", "FairFace"} <= set(card.data.datasets)
    assert "Trained on UTKFace and FairFace" in card.text
    assert "non-commercial" in card.text and "Intended use and limits" in card.text
    assert "### By ethnicity" in card.text and "### By race group (FairFace)" in card.text


def test_upload_calls_the_hub_client_with_the_staged_folder(run_dir, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            from pathlib import Path

            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

        def create_tag(self, repo_id, tag, **kwargs):
            calls.append(("create_tag", repo_id, tag))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    push.push(run_dir, "someone/model-a", tag="v1")
    assert calls[0][:2] == ("create_repo", "someone/model-a")
    assert calls[1][0] == "upload_folder" and "model.safetensors" in calls[1][2] and "README.md" in calls[1][2]
    assert calls[2] == ("create_tag", "someone/model-a", "v1")


def test_the_candidates_table_reads_each_models_numbers_from_the_report(report, capsys):
    from tools import compare_runs

    compare_runs.main([str(report / "metrics.json")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | UTKFace MAE") and len(lines) == 2 + 2  # header, rule, two models
    metrics = json.loads((report / "metrics.json").read_text())[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[1] == f"{metrics['utkface']['overall']['age_mae']:.2f}"
    races = {name: g["gender_accuracy"] for name, g in metrics["fairface"]["by_race"].items()}
    assert cells[7].endswith(f"({100 * (max(races.values()) - min(races.values())):.1f})")
    # The signed error of each FairFace group present, from the report's breakdown.
    for name, cell in zip(("3-9", "10-19"), cells[8].split("/")):
        group = metrics["fairface"]["by_age_group"].get(name)
        assert cell.strip() == (f"{group['age_signed_error']:+.1f}" if group else "")


def test_a_models_serving_time_on_each_engine(run_dir, capsys):
    from tools import model_speed

    model_speed.main([str(run_dir), "--runs", "2", "--threads", "1"])
    timed = json.loads(capsys.readouterr().out)
    assert timed["cpu"] and len(timed["ms"]) == 2 and all(ms > 0 for ms in timed["ms"].values())
    assert {name.rsplit(", ", 1)[1].rstrip(")") for name in timed["ms"]} == {"onnx", "torch"}


def test_averaging_a_model_with_itself_answers_as_the_model(run_dir, tiny_pack, capsys):
    from tools import ensemble

    ensemble.main([str(run_dir), str(run_dir), "--data", str(tiny_pack), "--split", "test", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3  # header, rule, each model alone, the two averaged
    alone, together = ([c.strip() for c in line.strip("|").split("|")][1:] for line in (lines[2], lines[4]))
    assert alone == together  # the same distributions and P(female) averaged are those distributions


def test_averaged_answers_are_the_mean_of_the_members():
    import torch

    from tools.ensemble import averaged
    from training.evaluation.metrics import FIELDS, Outputs

    def outputs(age_logits: torch.Tensor, gender_logit: torch.Tensor) -> Outputs:
        n = len(age_logits)
        labels = {k: torch.zeros(n, dtype=torch.long) for k in FIELDS if k not in ("age_logits", "gender_logit")}
        return Outputs(age_logits=age_logits, gender_logit=gender_logit, **labels)

    a, b = outputs(torch.randn(5, 116), torch.randn(5)), outputs(torch.randn(5, 116), torch.randn(5))
    both = averaged([a, b], [1.0, 2.0])
    mean = (torch.softmax(a.age_logits, -1) + torch.softmax(b.age_logits, -1)) / 2
    assert torch.allclose(torch.softmax(both.age_logits, -1), mean, atol=1e-6)
    p = (torch.sigmoid(a.gender_logit) + torch.sigmoid(b.gender_logit / 2.0)) / 2
    assert torch.allclose(torch.sigmoid(both.gender_logit), p, atol=1e-6)


def test_a_model_against_itself_differs_by_nothing(run_dir, tiny_pack, capsys):
    from tools import paired_difference

    paired_difference.main([str(run_dir), str(run_dir), "--data", str(tiny_pack), "--split", "test",
                            "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    cells = [c.strip() for c in lines[-1].strip("|").split("|")][1:]
    assert lines[-3].startswith("| model | UTKFace MAE") and len(cells) == 6
    assert all(cell in ("", "+0.00 +- 0.00") for cell in cells) and cells[0] == "+0.00 +- 0.00"


def test_a_paired_difference_and_its_standard_error_by_hand():
    import numpy as np

    from tools.paired_difference import difference

    baseline, candidate = np.array([3.0, 5.0, 4.0, 8.0]), np.array([2.0, 5.0, 3.0, 6.0])
    # Differences -1, 0, -1, -2: mean -1, sample standard deviation sqrt(2/3), its standard error sqrt(2/3) / 2.
    assert difference(candidate, baseline) == f"-1.00 +- {np.sqrt(2 / 3) / 2:.2f}" == "-1.00 +- 0.41"
    assert difference(np.array([True, True]), np.array([False, True]), 100.0) == "+50.00 +- 50.00"
    assert difference(np.array([1.0]), np.array([2.0])) == ""
