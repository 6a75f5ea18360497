"""A webcam session's frame rate, measured as frames are served: the numbers worked out by hand."""

import logging

from demo.live import RATE_WINDOW, RateMeter


def test_the_rate_follows_the_frames_and_changes_are_logged_with_their_cause(caplog):
    caplog.set_level(logging.INFO, logger="demo.live")
    meter = RateMeter()
    assert meter.status() == "Measuring the frame rate..."
    t = 0.0
    for _ in range(RATE_WINDOW + 1):  # a frame every 0.2 s, answered in 150 ms
        meter.frame(t, t + 0.15)
        t += 0.2
    assert abs(meter.rate - 5.0) < 1e-9
    assert meter.status() == "5.0 frames a second: each frame takes about 150 ms to answer on this machine now."
    assert caplog.text.count("frames a second") == 1
    for _ in range(RATE_WINDOW + 1):  # a busy moment: a frame every 0.5 s, answered in 450 ms
        meter.frame(t, t + 0.45)
        t += 0.5
    assert abs(meter.rate - 2.0) < 1e-9  # only the last frames count: a slow start is forgotten
    assert "5.0 -> " in caplog.text and "answers taking 450 ms" in caplog.text
