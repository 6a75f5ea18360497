import json

import pytest

from tests.conftest import SHARED_WEIGHTS
from training import compare_backbones


@pytest.mark.skipif(not SHARED_WEIGHTS.is_dir(), reason="needs ../shared/weights")
def test_probe_reports_every_backbone(tiny_pack, tmp_path, capsys):
    out = tmp_path / "backbones.json"
    compare_backbones.main(["--data", str(tiny_pack), "--weights-dir", str(SHARED_WEIGHTS), "--train", "8",
                            "--val", "2", "--sizes", "64", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["backbone"] for r in rows] == ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2"]
    assert all(r["val_mae"] > 0 and 0 <= r["val_gender_acc"] <= 1 and r["cpu_ms_per_face"] > 0 for r in rows)
    assert "| efficientnet_lite0 | 64 |" in capsys.readouterr().out
