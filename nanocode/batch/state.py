"""What every scheduler of a batch shares: its goals' settings, its budgets, its stop, the money spent,
the results recorded, and how a goal's failure is named."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanocode.batch import results
from nanocode.batch.backoff import Backoff
from nanocode.batch.goals import Goal
from nanocode.batch.progress import Progress
from nanocode.batch.results import Result
from nanocode.errors import BudgetExceeded, ConfigError, EndpointError, Interrupted, NanocodeError
from nanocode.settings import Settings


@dataclass
class Budgets:
    max_cost: float = 0.0  # dollars for the whole batch; 0 is no limit
    max_time: float = 0.0  # seconds for the whole batch; 0 is no limit


@dataclass
class Planned:
    """A goal with its settings, ready to be prepared."""

    goal: Goal
    settings: Settings


@dataclass(eq=False)
class BatchState:
    """The batch as its schedulers and goal runners see it; every method may be called from any thread."""

    out: Path
    budgets: Budgets
    progress: Progress
    gate: Any = field(default_factory=Backoff)  # a Backoff, or on a Ray node the cluster's
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    stopping: NanocodeError | None = None
    started: float = field(default_factory=time.monotonic)
    spent: float = 0.0
    finished: list[Result] = field(default_factory=list)

    def halt(self, why: NanocodeError) -> None:
        """No goal starts from now on, and running goals end at their next step."""
        with self.lock:
            if self.stopping is None:
                self.stopping = why
                self.stop.set()
                self.progress.line(f"batch: {why.format_message()}")

    def check_budgets(self) -> None:
        b = self.budgets
        if b.max_time and time.monotonic() - self.started >= b.max_time:
            self.halt(BudgetExceeded(f"stopped: the batch ran out of time ({b.max_time:g}s, --batch-max-time)"))
        if b.max_cost and self.spent >= b.max_cost:
            self.halt(
                BudgetExceeded(
                    f"stopped: the batch cost ${self.spent:.4f}, reaching its limit of ${b.max_cost:g} "
                    "(--batch-max-cost)"
                )
            )

    def spend(self, cost: float) -> None:
        with self.lock:
            self.spent += cost
        self.check_budgets()

    def outer(self) -> None:
        """Raises the batch's stop in a goal, at its next step."""
        with self.lock:
            why = self.stopping
        if why is not None:
            raise type(why)(why.format_message())

    def record(self, result: Result) -> None:
        if result.outcome != "interrupted" or not results.is_done(results.read(self.out, result.id), False):
            results.write(self.out, result)
        with self.lock:
            self.finished.append(result)
        self.progress.end(result)

    def outcome(self, exc: BaseException, engine_gone: Callable[[str], str]) -> tuple[str, str]:
        """The outcome and reason of a goal that failed with `exc`; `engine_gone` says why the goal's
        engine is gone (after the message of the failure), or "" while it answers."""
        message = exc.format_message() if isinstance(exc, NanocodeError) else f"{type(exc).__name__}: {exc}"
        if isinstance(self.stopping, Interrupted):  # whatever failed, it failed because everything was stopped
            return "interrupted", self.stopping.format_message()
        if isinstance(exc, BudgetExceeded):
            batch = isinstance(self.stopping, BudgetExceeded) and message == self.stopping.format_message()
            return ("stopped" if batch else "budget"), message
        if isinstance(exc, EndpointError):
            return "endpoint", message
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            return "interrupted", message or "interrupted"
        if gone := engine_gone(message):
            return "engine", gone
        if isinstance(exc, ConfigError):
            return "config", message
        return "crash", message
