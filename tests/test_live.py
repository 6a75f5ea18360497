"""Webcam sessions: the frame rate measured as frames are served, and the turns at the camera, by hand."""

import logging

from demo.live import LOG_EVERY_S, RATE_WINDOW, LiveSession, RateMeter, StreamTurns


def test_the_rate_follows_the_frames_and_changes_are_logged_with_their_cause_now_and_then(caplog):
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
    for _ in range(int(LOG_EVERY_S / 0.5) + 2):  # a busy spell: a frame every 0.5 s, answered in 450 ms
        meter.frame(t, t + 0.45)
        t += 0.5
    assert abs(meter.rate - 2.0) < 1e-9  # only the last frames count: a slow start is forgotten
    # One more line, not one a frame: the change and its cause, once LOG_EVERY_S has passed.
    assert caplog.text.count("frames a second") == 2
    assert "5.0 -> 2.0" in caplog.text and "answers taking 450 ms" in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _frame(turns: StreamTurns, session: LiveSession) -> str | None:
    session.frame_arrived(turns.clock(), turns.gap_s)
    return turns.turn(session)


def _until(turns: StreamTurns, clock: Clock, t: float, *sessions: LiveSession) -> list:
    """The sessions send a frame a second until time t; the answers to their last frames."""
    while clock.now < t:
        clock.now = min(t, clock.now + 1)
        answers = [_frame(turns, s) for s in sessions]
    return answers


def test_two_stream_at_once_the_third_waits_told_its_place_and_its_wait_then_gets_its_turn():
    clock = Clock()
    turns = StreamTurns(slots=2, limit_s=100, gap_s=3, clock=clock)
    first, second, third = LiveSession(), LiveSession(), LiveSession()
    assert _frame(turns, first) is None
    assert _until(turns, clock, 30, first) == [None]
    assert _frame(turns, second) is None
    message = _frame(turns, third)
    assert "Waiting for a turn" in message and "number 1 in line" in message
    assert "about 70 s to go" in message  # the first's turn ends at 100 s
    # What the page shows of each turn: the first has 70 s left, the second all of its 100, the third waits.
    assert [turns.left_s(s) for s in (first, second, third)] == [70, 100, 100]
    last = _until(turns, clock, 100.5, first, second, third)
    assert "are up" in last[0]  # its time ran out: told so, and its turn went to the next in line
    assert last[1:] == [None, None]
    assert "are up" in _frame(turns, first)  # still sending frames: still told
    _until(turns, clock, clock.now + 5, second, third)  # it stops a while (past the gap) and records again:
    assert first.frame_arrived(clock.now, turns.gap_s) is True  # a new stream...
    assert "number 1 in line" in turns.turn(first)  # ...at the back of the line


def test_a_stopped_session_gives_up_its_turn_and_a_new_stream_numbers_from_one_again():
    clock = Clock()
    turns = StreamTurns(slots=1, limit_s=100, gap_s=3, clock=clock)
    first, second = LiveSession(), LiveSession()
    assert _frame(turns, first) is None
    tracker = first.tracker
    assert "number 1 in line" in _frame(turns, second)
    assert _until(turns, clock, 5, second) == [None]  # the first's frames stopped (Stop, or the tab closed)
    turns.leave(second)  # Stop noticed by the page: the turn is free at once, without waiting for the gap
    assert _frame(turns, first) is None and first.tracker is not tracker  # a fresh tracker: #1 again
