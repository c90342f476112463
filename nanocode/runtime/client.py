"""Speaks the runtime's JSON-lines protocol over a byte channel."""

import json
import time
from pathlib import Path
from typing import Any, Protocol

from nanocode.errors import FileOpError
from nanocode.interfaces import CommandResult

SERVER_SOURCE = (Path(__file__).parent / "server.py").read_text()
# The runtime's command line: it reads its own source as the first line of its
# input, which keeps the command line short (in `ps`, say) and needs nothing installed.
BOOTSTRAP = ["python3", "-I", "-c", "import sys, json; exec(json.loads(sys.stdin.buffer.readline()))"]
# Set for every command, on the host and in the sandbox, so that nothing waits for a person.
NON_INTERACTIVE = {
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "MANPAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "EDITOR": "true",
    "VISUAL": "true",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1",
    "PYTHONUNBUFFERED": "1",
    "TERM": "dumb",
    "CI": "1",
}
# Spare time, past a command's own timeout, for the runtime to kill it and answer.
GRACE = 10.0


class ChannelClosed(Exception):
    """The runtime process is gone, or stopped answering."""


class RuntimeExited(ChannelClosed):
    """The runtime's end of the channel closed: it died, or what hosted it did."""


class Transport(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes:
        """Some bytes of the runtime's stdout; b"" at end of stream; raises TimeoutError."""
        ...

    def close(self) -> None: ...


class RuntimeClient:
    def __init__(
        self, transport: Transport, cwd: str, output_cap: int, start_timeout: float = 30.0, source: str = SERVER_SOURCE
    ):
        self.transport = transport
        self.cwd = cwd
        self.output_cap = output_cap
        self._buffer = b""
        self._next_id = 0
        try:
            transport.send(json.dumps(source).encode() + b"\n")
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        hello = self._read_line(time.monotonic() + start_timeout)
        if hello.get("hello") != "nanocode-runtime":
            raise ChannelClosed(f"unexpected greeting from the runtime: {hello!r}")
        self.hello = hello  # with what the runtime does without, where its kernel lacks something

    def _read_line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelClosed("the runtime stopped answering")
            try:
                chunk = self.transport.recv(left)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise RuntimeExited("the runtime exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            raise ChannelClosed(f"the runtime sent something unreadable: {line[:200]!r}") from None
        if not isinstance(reply, dict):
            raise ChannelClosed(f"the runtime sent something unreadable: {line[:200]!r}")
        return reply

    def request(self, op: str, wait: float, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        payload = {"id": self._next_id, "op": op, **fields}
        try:
            self.transport.send(json.dumps(payload).encode() + b"\n")
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        deadline = time.monotonic() + wait
        while True:
            reply = self._read_line(deadline)
            if reply.get("id") == self._next_id:
                return reply

    def run(self, command: str, timeout: float) -> CommandResult:
        reply = self.request(
            "run", timeout + GRACE, command=command, timeout=timeout, cap=self.output_cap, cwd=self.cwd
        )
        if not reply["ok"]:
            return CommandResult("", f"could not start the command: {reply['error']}", exit_code=None)
        return CommandResult(
            stdout=reply["stdout"],
            stderr=reply["stderr"],
            exit_code=reply["exit_code"],
            timed_out=reply["timed_out"],
            signal=reply["signal"],
            killed="out of memory" if reply["oom"] else "",
            cut=reply["cut"],
            duration=reply["duration"],
        )

    def read_file(self, path: str) -> str:
        reply = self.request("read", GRACE + 20, path=self._resolve(path), cap=self.output_cap)
        if not reply["ok"]:
            raise FileOpError(reply["error"])
        content: str = reply["content"]
        return content

    def write_file(self, path: str, content: str) -> None:
        reply = self.request("write", GRACE + 20, path=self._resolve(path), content=content)
        if not reply["ok"]:
            raise FileOpError(reply["error"])

    def _resolve(self, path: str) -> str:
        if not path:
            raise FileOpError("empty path")
        return str(Path(self.cwd, path))

    def close(self) -> None:
        self.transport.close()
