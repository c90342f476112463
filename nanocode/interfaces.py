"""The few interfaces the parts of nanocode meet at."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, Any]
Watch = Callable[[str], None]  # given a running command's latest output


@dataclass
class CommandResult:
    """What a command did. A failing command is a result, never an exception."""

    stdout: str
    stderr: str
    exit_code: int | None  # None when the command did not exit by itself
    timed_out: bool = False
    signal: int | None = None
    # Set when something outside the command ended it (out of memory, the
    # sandbox dying); the model is told in these words.
    killed: str = ""
    cut: int = 0  # bytes dropped by the output cap
    duration: float = 0.0


@dataclass
class Completion:
    """One reply of the model: the assistant message and what it cost."""

    message: Message
    cost: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)


class Model(Protocol):
    name: str

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion: ...


class Executor(Protocol):
    """Where tools act. Paths are relative to the project directory."""

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        """`watch` is given the last lines of the command's output while it runs, now and then."""
        ...

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        """Lines first to last (from 1) where `lines` says, else the whole file. Raises FileOpError."""
        ...

    def write_file(self, path: str, content: str) -> None:
        """Raises FileOpError; creates parent folders."""
        ...

    def close(self) -> None: ...


class Display(Protocol):
    """What a person watching sees; all of it goes to stderr."""

    def waiting(self) -> Any:
        """A context manager shown while the model is thinking."""
        ...

    def tool(self, name: str, arguments: str, result: str) -> None: ...

    def running(self) -> Any:
        """A context manager shown while a command runs; it gives the Watch its output goes to."""
        ...

    def note(self, text: str) -> None: ...

    def say(self, text: str) -> None:
        """The model's text between tool calls."""
        ...


class Recorder(Protocol):
    """Where every step of a run is written as it happens."""

    def record(self, kind: str, **fields: Any) -> None: ...
