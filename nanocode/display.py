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

WIDTH = 100


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

    def tool(self, name: str, arguments: str, result: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass
