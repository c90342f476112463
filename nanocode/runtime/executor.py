"""An Executor over a runtime that something hosts: the operations here, the hosting in a subclass."""

from nanocode.errors import FileOpError
from nanocode.interfaces import CommandResult, Watch
from nanocode.runtime.client import SERVER_SOURCE, ChannelClosed, RuntimeClient


class RuntimeExecutor:
    """Runs tools through a runtime started on creation; close() stops it and what it started.

    If the runtime dies (killed, out of memory, its container gone), the call that
    saw it says so, and the next call starts a fresh one. So too if it breaks the protocol
    (MalformedReply): a command can take it over.
    """

    source = SERVER_SOURCE  # the runtime's program (tests give a hostile one)

    def __init__(self) -> None:
        self.runtime: RuntimeClient | None = None
        self._live()

    def _start(self) -> RuntimeClient:
        """Hosts a fresh runtime: a subprocess, a container."""
        raise NotImplementedError

    def _stop(self) -> None:
        """Ends what hosts the runtime, and everything it started."""
        raise NotImplementedError

    def _obituary(self, exc: ChannelClosed) -> str:
        """Why the runtime died, and what was lost with it, in words for the model."""
        raise NotImplementedError

    def _live(self) -> RuntimeClient:
        if self.runtime is None:
            try:
                self.runtime = self._start()
            except BaseException:
                self.close()  # an interrupt during a start must not leave half of it behind
                raise
        return self.runtime

    def _died(self, exc: ChannelClosed) -> str:
        reason = self._obituary(exc)
        self.close()
        return reason

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        runtime = self._live()
        try:
            return runtime.run(command, timeout, watch)
        except ChannelClosed as exc:
            return CommandResult("", "", None, killed=self._died(exc))

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        runtime = self._live()
        try:
            return runtime.read_file(path, lines)
        except ChannelClosed as exc:
            raise FileOpError(self._died(exc)) from None

    def write_file(self, path: str, content: str) -> None:
        runtime = self._live()
        try:
            runtime.write_file(path, content)
        except ChannelClosed as exc:
            raise FileOpError(self._died(exc)) from None

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        self._stop()
