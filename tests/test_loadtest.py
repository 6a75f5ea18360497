"""The load test tool against a real launched app (tiny numbers: this checks the tool, not the speed)."""

import os

import pytest

from tests.conftest import HOPPER
from tools import loadtest


def test_clients_upload_concurrently_and_every_request_is_counted(server, tmp_path):
    images = loadtest.client_images(HOPPER, 3, tmp_path)
    assert len({p.read_bytes() for p in images}) == 3  # three different photos
    result = loadtest.run_load(server[0], images, requests=2, time_limit=120)
    assert result["ok"] == 6 and result["errors"] == 0
    assert 0 < result["p50_s"] <= result["p95_s"] and result["throughput_per_s"] > 0


def test_memory_is_read_from_proc():
    assert loadtest.rss_mb(os.getpid()) > 10
    assert loadtest.rss_mb(2**22 + 12345) is None  # no such process


def test_only_this_machine_is_load_tested():
    with pytest.raises(SystemExit):
        loadtest.main(["--url", "http://example.com:7860/"])
