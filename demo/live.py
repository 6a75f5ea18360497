"""Webcam sessions: each one's face tracker and frame rate, and whose turn it is to stream.

The browser sends a frame only once the previous one is answered, so a session's frame rate is
set by how long this machine takes per frame right now, not by a number fixed at start-up: the
page asks for frames at most every STREAM_EVERY seconds, and the rate follows the machine below
that. `RateMeter` measures it over the session's last frames (a bounded window) for the page, and
logs when it changes and why (frames taking longer or shorter to answer), at most every LOG_EVERY_S.

`StreamTurns` shares the machine: at most `slots` sessions have their frames answered at once, each
for at most `limit_s`; the others are told they are waiting, where they are in line and about how
long until a turn frees. A session whose frames stop for `gap_s` (Stop pressed, tab closed) gives up
its turn, and its next frame starts a new stream: faces numbered from #1 again.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from demo.tracking import FaceTracker

log = logging.getLogger(__name__)

# The fastest a session is offered frames (10 a second); slower machines answer slower, and the
# browser waits for each answer before sending the next frame.
STREAM_EVERY = 0.1
RATE_WINDOW = 10  # frames the rate and the answer time are measured over
RATE_CHANGE = 0.25  # a change of the rate by this share is logged...
LOG_EVERY_S = 30.0  # ...at most this often per session
STREAM_LIMIT_S = 120  # one turn at the camera, so others get theirs
STREAM_SLOTS = 2  # sessions streaming at once; more wait in line
STREAM_GAP_S = 3.0  # frames stopped this long: the stream has ended


@dataclass
class RateMeter:
    """Frames a second and milliseconds to answer, over the last RATE_WINDOW frames of a session."""

    arrivals: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW + 1))
    answer_ms: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    logged_rate: float | None = None
    logged_at: float = float("-inf")

    def frame(self, arrived: float, answered: float) -> None:
        self.arrivals.append(arrived)
        self.answer_ms.append(1000 * (answered - arrived))
        rate = self.rate
        if rate is None or len(self.arrivals) <= RATE_WINDOW // 2:
            return
        changed = self.logged_rate is None or abs(rate - self.logged_rate) > RATE_CHANGE * self.logged_rate
        if changed and answered - self.logged_at >= LOG_EVERY_S:
            log.info("webcam session %x: %s frames a second, answers taking %.0f ms (median of the last %d)",
                     id(self), f"{self.logged_rate:.1f} -> {rate:.1f}" if self.logged_rate else f"{rate:.1f}",
                     statistics.median(self.answer_ms), len(self.answer_ms))
            self.logged_rate, self.logged_at = rate, answered

    @property
    def rate(self) -> float | None:
        if len(self.arrivals) < 2:
            return None
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else None

    def status(self) -> str:
        rate = self.rate
        if rate is None:
            return "Measuring the frame rate..."
        return (f"{rate:.1f} frames a second: each frame takes about {statistics.median(self.answer_ms):.0f} ms "
                "to answer on this machine now.")


@dataclass
class LiveSession:
    """One page's webcam: its current stream's tracker and rate, and its place in the turns."""

    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    tracker: FaceTracker = field(default_factory=FaceTracker)
    meter: RateMeter = field(default_factory=RateMeter)
    last_seen: float | None = None  # a frame's arrival or answer
    turn_started: float | None = None
    time_up: bool = False

    def frame_arrived(self, now: float, gap_s: float = STREAM_GAP_S) -> bool:
        """Note a frame; True when it starts a new stream (the first, or after a pause), which starts afresh."""
        new = self.last_seen is None or now - self.last_seen > gap_s
        if new:
            self.tracker, self.meter, self.time_up = FaceTracker(), RateMeter(), False
        self.last_seen = now
        return new

    def stopped(self, now: float, gap_s: float) -> bool:
        return self.last_seen is None or now - self.last_seen > gap_s


class StreamTurns:
    """Which sessions stream now: at most `slots` at once, each for `limit_s`; the rest wait in arrival order."""

    def __init__(self, slots: int = STREAM_SLOTS, limit_s: float = STREAM_LIMIT_S, gap_s: float = STREAM_GAP_S,
                 clock=time.monotonic) -> None:
        self.slots, self.limit_s, self.gap_s, self.clock = slots, limit_s, gap_s, clock
        self.streaming: dict[str, LiveSession] = {}
        self.waiting: dict[str, LiveSession] = {}  # in arrival order
        self._lock = threading.Lock()

    def turn(self, session: LiveSession) -> str | None:
        """None when this session's frame is to be answered now; else the message to show it instead."""
        now = self.clock()
        with self._lock:
            self._drop_stopped(now)
            if session.key in self.streaming:
                if now - session.turn_started <= self.limit_s:
                    return None
                del self.streaming[session.key]
                session.time_up = True
                log.info("webcam session %s: its %.0f s are up", session.key[:8], self.limit_s)
            if session.time_up:
                return (f"**Your {self.limit_s:.0f} s are up**, so that others get a turn. Stop, and record "
                        "again in a few seconds to take another.")
            self.waiting.setdefault(session.key, session)
            if len(self.streaming) < self.slots and next(iter(self.waiting)) == session.key:
                del self.waiting[session.key]
                session.turn_started = now
                self.streaming[session.key] = session
                return None
            return self._waiting_message(session, now)

    def left_s(self, session: LiveSession) -> float:
        """Seconds left of the session's turn (the whole turn before it has one)."""
        if session.turn_started is None or session.key not in self.streaming:
            return self.limit_s
        return max(0.0, self.limit_s - (self.clock() - session.turn_started))

    def leave(self, session: LiveSession) -> None:
        """The session stopped streaming: its turn or its place in line goes to the others."""
        with self._lock:
            self.streaming.pop(session.key, None)
            self.waiting.pop(session.key, None)

    def _drop_stopped(self, now: float) -> None:
        for queue in (self.streaming, self.waiting):
            for key in [k for k, s in queue.items() if s.stopped(now, self.gap_s)]:
                del queue[key]

    def _waiting_message(self, session: LiveSession, now: float) -> str:
        place = list(self.waiting).index(session.key) + 1
        # The turns free as the streams' time runs out; then each waiting session's turn lasts limit_s.
        frees = sorted(max(0.0, self.limit_s - (now - s.turn_started)) for s in self.streaming.values())
        rounds, slot = divmod(place - 1, self.slots)
        wait = (frees[slot] if slot < len(frees) else 0.0) + rounds * self.limit_s
        return (f"**Waiting for a turn**: {len(self.streaming)} people are using the camera now (at most "
                f"{self.slots} at once, {self.limit_s:.0f} s each). You are number {place} in line; "
                f"about {wait:.0f} s to go. Keep this page open: it starts by itself.")
