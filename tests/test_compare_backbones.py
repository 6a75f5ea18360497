import csv
import json

from tools import compare_backbones


def test_probe_finetune_and_latency_for_every_backbone(tiny_pack, tmp_path, capsys):
    # The pretrained files come from their installed PyPI packages (requirements-dev.txt).
    out = tmp_path / "backbones.json"
    compare_backbones.main(["--data", str(tiny_pack), "--train", "8",
                            "--val", "4", "--sizes", "112", "--backbones", "dlib_resnet,efficientnet_lite0",
                            "--finetune-minutes", "0.05", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["backbone"] for r in result["probe"]] == ["dlib_resnet", "efficientnet_lite0"]
    for row in result["probe"]:
        assert row["cpu_ms_per_face"] > 0 and {"utkface", "fairface"} <= set(row["probe_val"])
    for run in result["finetune"]:
        assert run["train_images_per_s"] > 0 and 0 <= run["val"]["utkface"]["gender_accuracy"] <= 1
        with (tmp_path / "runs" / f"{run['backbone']}_112" / "history.csv").open() as f:
            seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
        assert sum(seconds[:-1]) < 0.05 * 60  # no epoch starts once the budget is spent
    assert "| dlib_resnet | 112 |" in capsys.readouterr().out
