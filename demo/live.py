"""One webcam session's state: its face tracker, and the frame rate it is getting, measured as it goes.

The browser sends a frame only once the previous one is answered, so a session's frame rate is
set by how long this machine takes per frame right now, not by a number fixed at start-up: the
page asks for frames at most every STREAM_EVERY seconds, and the rate follows the machine below
that. `RateMeter` measures it over the session's last frames (a bounded window) for the page, and
logs when it changes and why (frames taking longer or shorter to answer).
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass, field

from demo.tracking import FaceTracker

log = logging.getLogger(__name__)

# The fastest a session is offered frames (10 a second); slower machines answer slower, and the
# browser waits for each answer before sending the next frame.
STREAM_EVERY = 0.1
RATE_WINDOW = 10  # frames the rate and the answer time are measured over
RATE_CHANGE = 0.25  # a change of the rate by this share is logged


@dataclass
class RateMeter:
    """Frames a second and milliseconds to answer, over the last RATE_WINDOW frames of a session."""

    arrivals: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW + 1))
    answer_ms: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    logged_rate: float | None = None

    def frame(self, arrived: float, answered: float) -> None:
        self.arrivals.append(arrived)
        self.answer_ms.append(1000 * (answered - arrived))
        rate = self.rate
        if rate is None or len(self.arrivals) <= RATE_WINDOW // 2:
            return
        if self.logged_rate is None or abs(rate - self.logged_rate) > RATE_CHANGE * self.logged_rate:
            log.info("webcam session %x: %s frames a second, answers taking %.0f ms (median of the last %d)",
                     id(self), f"{self.logged_rate:.1f} -> {rate:.1f}" if self.logged_rate else f"{rate:.1f}",
                     statistics.median(self.answer_ms), len(self.answer_ms))
            self.logged_rate = rate

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
    tracker: FaceTracker = field(default_factory=FaceTracker)
    meter: RateMeter = field(default_factory=RateMeter)
