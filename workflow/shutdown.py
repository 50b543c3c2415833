"""Two-stage shutdown: the first SIGTERM/SIGINT drains, the second gives up at once."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def on_stop(stop: Callable[[], None], *, force: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on the first signal and ``force`` on the next; restore the old handlers after."""
    signals = (signal.SIGTERM, signal.SIGINT)
    received = 0

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        (stop if received == 1 else force)()

    previous = {s: signal.signal(s, handle) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
