"""Speaks the runtime's JSON-lines protocol over a byte channel."""

import json
import time
from pathlib import Path
from typing import Any, Protocol

from nanocode.errors import FileOpError
from nanocode.interfaces import CommandResult, Watch

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
# JSON writes a byte of output as at most 6 characters (\u001b, or \ufffd for one that is not UTF-8).
ESCAPED = 6
# What each reply must hold, and of which types (exactly: JSON's true is no number here).
NONE = type(None)
Fields = dict[str, tuple[type, ...]]
REPLY: Fields = {"ok": (bool,)}
FAILED: Fields = {"error": (str,)}
RUN: Fields = {
    "stdout": (str,),
    "stderr": (str,),
    "exit_code": (int, NONE),
    "signal": (int, NONE),
    "timed_out": (bool,),
    "oom": (bool,),
    "cut": (int,),
    "duration": (int, float),
}
READ: Fields = {"content": (str,)}


class ChannelClosed(Exception):
    """The runtime process is gone, or stopped answering."""


class RuntimeExited(ChannelClosed):
    """The runtime's end of the channel closed: it died, or what hosted it did."""


class MalformedReply(ChannelClosed):
    """The runtime said something outside its protocol. Commands run as the runtime's user and may
    take it over, so what comes back is untrusted input: the runtime is given up for a fresh one."""


def reply_bound(output_cap: int) -> int:
    """The longest reply a runtime keeping to the protocol can send: two capped streams, escaped, and notes."""
    return ESCAPED * (2 * output_cap + 4096) + 65536


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
        self.max_reply = reply_bound(output_cap)
        self._buffer = bytearray()
        self._next_id = 0
        try:
            transport.send(json.dumps(source).encode() + b"\n")
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        hello = self._read_line(time.monotonic() + start_timeout)
        if hello.get("hello") != "nanocode-runtime":
            raise MalformedReply(f"unexpected greeting from the runtime: {_shown(repr(hello))}")
        self.hello = hello  # with what the runtime does without, where its kernel lacks something

    def _read_line(self, deadline: float) -> dict[str, Any]:
        searched = 0  # what is buffered was searched for the line's end up to here
        while (end := self._buffer.find(b"\n", searched)) < 0:
            if len(self._buffer) > self.max_reply:
                raise MalformedReply(f"a reply of more than {self.max_reply} bytes")
            searched = len(self._buffer)
            self._buffer += self._recv(deadline)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError):
            raise MalformedReply(f"something unreadable: {_shown(repr(line))}") from None
        if not isinstance(reply, dict):
            raise MalformedReply(f"something unreadable: {_shown(repr(line))}")
        return reply

    def _recv(self, deadline: float) -> bytes:
        while True:
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
            return chunk

    def request(self, op: str, wait: float, watch: Watch | None = None, **fields: Any) -> dict[str, Any]:
        """The reply to one request, checked to be that request's and to hold `ok` (and `error` when not
        ok); the progress said before it (a running command's latest output) goes to `watch`."""
        self._next_id += 1
        payload = {"id": self._next_id, "op": op, **fields}
        try:
            self.transport.send(json.dumps(payload).encode() + b"\n")
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        deadline = time.monotonic() + wait
        reply = self._read_line(deadline)
        while set(reply) == {"id", "progress"} and reply["id"] == self._next_id and isinstance(reply["progress"], str):
            if watch is not None:
                watch(reply["progress"])
            reply = self._read_line(deadline)
        given = reply.get("id")
        if type(given) is not int or given != self._next_id:
            # One request at a time, and none given up on without the runtime: no reply is ever late.
            raise MalformedReply(f"a reply to request {_shown(repr(given))} where {self._next_id} was asked")
        _check(reply, REPLY)
        if not reply["ok"]:
            _check(reply, FAILED)
        return reply

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        fields = {"command": command, "timeout": timeout, "cap": self.output_cap, "cwd": self.cwd}
        reply = self.request("run", timeout + GRACE, watch, stream=watch is not None, **fields)
        if not reply["ok"]:
            return CommandResult("", f"could not start the command: {reply['error']}", exit_code=None)
        _check(reply, RUN)
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

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        extra: dict[str, Any] = {"lines": list(lines)} if lines else {}
        reply = self.request("read", GRACE + 20, path=self._resolve(path), cap=self.output_cap, **extra)
        if not reply["ok"]:
            raise FileOpError(reply["error"])
        _check(reply, READ)
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


def _check(reply: dict[str, Any], fields: Fields) -> None:
    for name, types in fields.items():
        if type(reply.get(name)) not in types:
            raise MalformedReply(f"{name} is {_shown(repr(reply.get(name)))}")


def _shown(text: str) -> str:
    """A part of what the runtime sent, short enough for a message."""
    return text if len(text) <= 200 else text[:200] + "..."
