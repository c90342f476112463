"""What a batch puts around one goal: a transcript that keeps the goal's figures, an executor that
stops when the batch does."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanocode.batch.progress import GoalDisplay
from nanocode.interfaces import CommandResult, Executor, Watch
from nanocode.transcript import Transcript


class GoalTranscript(Transcript):
    """The goal's transcript, which also keeps the figures of its result and tells the progress table."""

    def __init__(self, path: Path, display: GoalDisplay, spent: Callable[[float], None]):
        super().__init__(path)
        self.display = display
        self.spent = spent
        self.steps = self.idle_replies = self.prompt_tokens = self.completion_tokens = 0
        self.cost = self.model_seconds = 0.0

    def record(self, kind: str, **fields: Any) -> None:
        super().record(kind, **fields)
        if kind != "response":
            return
        self.steps += 1
        self.idle_replies += not fields["message"].get("tool_calls")
        self.model_seconds += fields.get("seconds") or 0.0
        usage = fields.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        cost = fields.get("cost") or 0.0
        self.cost += cost
        self.display.cost = self.cost
        self.spent(cost)


class Guarded:
    """A goal's executor that refuses new work once the batch stops, so that no sandbox starts again."""

    def __init__(self, inner: Executor, check: Callable[[], None]):
        self.inner = inner
        self.check = check

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        self.check()
        return self.inner.run(command, timeout, watch)

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        self.check()
        return self.inner.read_file(path, lines)

    def write_file(self, path: str, content: str) -> None:
        self.check()
        self.inner.write_file(path, content)

    def close(self) -> None:
        """Left to the batch, which removes the sandbox after the goal, off the worker's path."""
