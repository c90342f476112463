"""The limits of one goal: model calls, continuations, wall-clock time and cost."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nanocode import prompts
from nanocode.errors import BudgetExceeded, NoProgress


@dataclass
class Limits:
    max_steps: int = 100
    max_continuations: int = 10
    max_seconds: float = 3600.0
    max_cost: float = 0.0  # dollars; 0 means no limit
    repeat_note: int = 3  # the same call with the same result this many times in a row: the model is told
    max_repeats: int = 6  # ... this many times: the goal ends
    # A limit from outside the goal (a batch's budgets, its stop), checked before each model call; it raises.
    outer: Callable[[], None] | None = None


@dataclass
class Budget:
    limits: Limits
    steps: int = 0
    continuations: int = 0
    cost: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def before_step(self) -> None:
        if self.steps >= self.limits.max_steps:
            raise BudgetExceeded(f"stopped: the goal used its {self.limits.max_steps} model calls (--max-steps)")
        self._check_time()
        self._check_cost()
        if self.limits.outer is not None:
            self.limits.outer()
        self.steps += 1

    def add_cost(self, cost: float | None) -> None:
        if cost:
            self.cost += cost

    def before_continuation(self) -> None:
        if self.continuations >= self.limits.max_continuations:
            raise BudgetExceeded(
                f"stopped: the model ended {self.continuations + 1} turns without completing the goal "
                f"(--max-continuations {self.limits.max_continuations})"
            )
        self.continuations += 1

    def seconds_left(self) -> float:
        return self.limits.max_seconds - (time.monotonic() - self.started)

    def _check_time(self) -> None:
        if self.seconds_left() <= 0:
            raise BudgetExceeded(f"stopped: the goal ran out of time ({self.limits.max_seconds:g}s, --max-time)")

    def _check_cost(self) -> None:
        if self.limits.max_cost and self.cost >= self.limits.max_cost:
            raise BudgetExceeded(
                f"stopped: the goal cost ${self.cost:.4f}, reaching the limit of ${self.limits.max_cost:g} (--max-cost)"
            )


@dataclass
class Breaker:
    """The circuit breaker for loops: the same tool call with the same result, again and again."""

    limits: Limits
    last: tuple[str, str, str] | None = None
    repeats: int = 0

    def see(self, name: str, arguments: str, result: str) -> str:
        """The result as the model gets it: with a note once the call has repeated `repeat_note` times."""
        key = (name, arguments, result)
        self.repeats = self.repeats + 1 if key == self.last else 1
        self.last = key
        if self.repeats < self.limits.repeat_note:
            return result
        return result + prompts.REPEATED.format(count=self.repeats, limit=self.limits.max_repeats)

    def check(self) -> None:
        if self.repeats >= self.limits.max_repeats:
            raise NoProgress(
                f"stopped: no progress, the model made the same {self.last[0] if self.last else ''} call "
                f"with the same result {self.repeats} times in a row (--max-repeats {self.limits.max_repeats})"
            )
