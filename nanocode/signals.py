"""How signals act on a goal: SIGINT, SIGTERM and SIGHUP stop it so that its clean-up runs."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: like Ctrl-C for the goal, but the REPL ends too."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _in_main_thread() -> bool:
    """Only the main thread may set signal handlers; a batch's workers leave signals to the batch."""
    return threading.current_thread() is threading.main_thread()


class Signals:
    """How signals act on a goal. SIGINT (Ctrl-C), SIGTERM and SIGHUP stop it, so that its clean-up
    runs; the last two end the REPL too. The first one starts the stop, and from then on the others
    are held until nanocode exits (or the REPL takes the next goal): a second signal cuts neither the
    clean-up nor the exit code."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.held: list[int] = []
        self.stopping = False

    @contextmanager
    def goal(self) -> Iterator[None]:
        if not _in_main_thread():
            yield
            return
        self.held, self.stopping = [], False
        self.previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            if not self.stopping:
                self._restore()
        if not self.stopping and any(sig != signal.SIGINT for sig in self.held):
            # A SIGTERM that came while a goal that ended by itself was cleaning up: it still ends nanocode.
            self.stopping = True
            raise Terminated

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.hold()  # before anything else runs: there is no moment when a second signal acts
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    def hold(self) -> None:
        if _in_main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._held)

    def _held(self, signum: int, frame: FrameType | None) -> None:
        self.held.append(signum)

    def resume(self) -> bool:
        """After a goal stopped by Ctrl-C, signals act as before it; True if SIGTERM or SIGHUP came meanwhile."""
        self._restore()
        self.stopping = False
        return any(sig != signal.SIGINT for sig in self.held)

    def exiting(self) -> None:
        """Once stopping, nanocode exits ignoring signals: Python's finalization puts back the default
        action of those it handles itself, under which a late signal would change the exit code."""
        if self.stopping and _in_main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _restore(self) -> None:
        if _in_main_thread():
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
