"""One back-off for every model client of a batch: a 429 slows all workers together."""

import threading
import time


class Backoff:
    """The gate every request passes: while a hold lasts, no worker sends."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()
        self.holds = 0  # how many times the endpoint asked to slow down

    def hold(self, seconds: float) -> None:
        with self._lock:
            self.holds += 1
            self._until = max(self._until, time.monotonic() + seconds)
        self.wait()

    def wait(self) -> None:
        while (left := self._until - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
