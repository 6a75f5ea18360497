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


def test_soak_sends_each_request_from_a_new_session_and_reports_every_round(server, tmp_path):
    url, demo = server
    seen = set(demo.state_holder.session_data)
    rows = loadtest.soak(url, HOPPER, sessions=6, every=3, clients=2, pid=os.getpid(), cache_dir=tmp_path,
                         time_limit=120)
    assert [r["sessions"] for r in rows] == [0, 3, 6] and rows[-1]["errors"] == 0
    assert all(r["memory_mb"] > 10 for r in rows)
    assert len(set(demo.state_holder.session_data) - seen) == 6  # six visitors, six sessions


def test_the_app_keeps_a_bounded_number_of_sessions(predictor, tmp_path):
    """What the soak found growing: Gradio's copy of the page per session. `launch` bounds it."""
    from demo.ui import SESSIONS_KEPT, build_demo, launch

    assert server_default_capacity() > SESSIONS_KEPT
    demo = build_demo(predictor, stream_every=0.3)
    _, url, _ = launch(demo, "127.0.0.1", None, sessions_kept=4, prevent_thread_lock=True, quiet=True)
    try:
        rows = loadtest.soak(url, HOPPER, sessions=6, every=6, clients=2, pid=None, cache_dir=None, time_limit=120)
        assert rows[-1]["errors"] == 0 and len(demo.state_holder.session_data) <= 4
    finally:
        demo.close()


def server_default_capacity() -> int:
    import inspect

    import gradio as gr

    return inspect.signature(gr.Blocks.launch).parameters["state_session_capacity"].default
