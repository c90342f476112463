"""What a person watching sees on stderr: tool lines, the model's words, a sign of life."""

import itertools
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from nanocode.interfaces import Watch

WIDTH = 100
LIVE_EVERY = 0.2  # seconds between redraws of a running command's output


# C0 and C1 controls but newline and tab, and the bidirectional marks, embeddings, overrides and
# isolates: text from files, names and models must neither drive the terminal nor reorder what it shows.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    return CONTROLS.sub("?", text.replace("\r\n", "\n"))


def name(text: str) -> str:
    """A name (a path, a symlink's target) as one line: a newline or tab in it is shown escaped, so
    that a name cannot make up lines of its own in a summary or a diff."""
    return printable(text.replace("\n", "\\n").replace("\t", "\\t"))


def shorten(text: str, width: int = WIDTH) -> str:
    line = " ".join(printable(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


class TerminalDisplay:
    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.color = self.tty and "NO_COLOR" not in os.environ

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        if not self.tty:
            yield
            return
        stop = threading.Event()

        def spin() -> None:
            started = time.monotonic()
            for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
                if stop.wait(0.1):
                    break
                elapsed = time.monotonic() - started
                self.stream.write(f"\r{self._style(f'{frame} thinking {elapsed:4.1f}s', '2')}")
                self.stream.flush()
            self.stream.write("\r\x1b[K")
            self.stream.flush()

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextmanager
    def running(self) -> Iterator[Watch | None]:
        """On a terminal, a running command's latest line of output, dim, redrawn in place at most a few
        times a second and gone when it ends; elsewhere nothing, so that logs get no partial lines."""
        if not self.tty:
            yield None
            return
        shown = [0.0]

        def watch(text: str) -> None:
            last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
            if last and time.monotonic() - shown[0] >= LIVE_EVERY:
                shown[0] = time.monotonic()
                self.stream.write(f"\r\x1b[K{self._style('  ' + shorten(last), '2')}")
                self.stream.flush()

        try:
            yield watch
        finally:
            if shown[0]:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def tool(self, name: str, arguments: str, result: str) -> None:
        first = next((line for line in result.splitlines() if line.strip()), "")
        self._print(self._style(f"→ {name} {shorten(arguments)}", "2"))
        self._print(self._style(f"  {shorten(first)}", "2;31" if result.startswith("ERROR") else "2"))

    def say(self, text: str) -> None:
        self._print(printable(text.strip()))

    def note(self, text: str) -> None:
        # On a terminal, over the spinner's line: a note can come while the model is asked (a retry).
        clear = "\r\x1b[K" if self.tty else ""
        self._print(clear + self._style(text, "33"))


class QuietDisplay:
    @contextmanager
    def waiting(self) -> Iterator[None]:
        yield

    @contextmanager
    def running(self) -> Iterator[Watch | None]:
        yield None

    def tool(self, name: str, arguments: str, result: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass
