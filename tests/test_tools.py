"""The measuring tools' own output: what they write can be read back."""

import json


def test_a_command_timed_beside_a_busy_process_reports_json_a_reader_can_parse(tmp_path, capsys):
    import sys

    from tools import beside_busy

    out = tmp_path / "beside.json"
    beside_busy.main(["--runs", "1", "--out", str(out), "--", sys.executable, "-c", "pass"])
    report = json.loads(out.read_text())  # (the file once ended in a literal backslash-n: not JSON)
    assert report == json.loads(capsys.readouterr().out)
    assert report["alone_s"] > 0 and report["beside_busy_s"] > 0 and report["ratio"] > 0
