"""The REPL: each line a goal, the next goal's sandbox started while the person types."""

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from nanocode.display import printable
from nanocode.errors import ConfigError, Interrupted, NanocodeError
from nanocode.interfaces import Executor
from nanocode.session import Session
from nanocode.signals import Terminated
from nanocode.wiring import Note
from nanocode.workspace.lease import ProjectBusy


def run(session: Session) -> None:
    """Reads goals until an empty line or the end of input, running each in the session."""
    Repl(session).run()


class Repl:
    def __init__(self, session: Session):
        self.session = session
        session.asks = True  # a goal's change set is asked about before it is said kept

    def run(self) -> None:
        s = self.session
        sandbox = " · sandbox" if s.settings.sandbox else ""
        window = f" · {s.context.window.describe()}" if s.settings.context_window else ""  # else the session said it
        s.display.note(f"nanocode · {s.model.name} · {s.settings.project}{sandbox}{window}")
        self.session.display.note("Each line is a goal. An empty line or Ctrl-D quits.")
        ahead: Ahead | None = None
        try:
            while True:
                if self.session.settings.sandbox and ahead is None:
                    ahead = Ahead(self.session.prepare)  # the next goal's sandbox starts while the person types
                line = self._read(ahead is not None)
                if line is None or not line.strip():
                    return
                taken, ahead = ahead, None
                self._repl_goal(line, taken)
        finally:
            if ahead is not None:
                self.session.signals.hold()
                ahead.discard()

    def _take(self, taken: "Ahead") -> tuple[Any, Executor]:
        """The sandbox started while the person typed; a signal while it finishes starting removes it."""
        try:
            with self.session.signals.goal():
                try:
                    return taken.take(self.session.display.note)
                except ProjectBusy:  # while the person typed: the other goal may have ended since
                    return self.session.prepare(self.session.display.note)
        except KeyboardInterrupt as exc:
            self.session.signals.hold()
            taken.discard()
            stopped = Interrupted("interrupted: the goal was stopped")
            stopped.terminated = isinstance(exc, Terminated)
            raise stopped from None

    def _read(self, waiting: bool) -> str | None:
        """The next goal; None at the end of input. With a sandbox waiting, SIGTERM at the prompt removes it too."""
        try:
            with self.session.signals.goal() if waiting else contextlib.nullcontext():
                return _read_goal()
        except Terminated:
            stopped = Interrupted("interrupted")
            stopped.terminated = True
            raise stopped from None
        except (EOFError, KeyboardInterrupt):
            click.echo("", err=True)
            return None

    def _repl_goal(self, line: str, taken: "Ahead | None") -> None:
        try:
            workspace, executor = self._take(taken) if taken else (None, None)
            click.echo(printable(self.session.run_goal(line, executor, workspace)))
        except NanocodeError as exc:
            if isinstance(exc, Interrupted) and self.session.signals.resume():
                exc.terminated = True  # a SIGTERM came while the goal stopped
            if isinstance(exc, ProjectBusy):  # this goal's, not the session's: the next line tries again
                exc.show()
                return
            if isinstance(exc, ConfigError) or (isinstance(exc, Interrupted) and exc.terminated):
                raise
            exc.show()
        if self.session.kept is not None:
            from nanocode.workspace import review

            review.ask(self.session.kept)
            self.session.kept = None


class Ahead:
    """A goal's workspace and sandbox, started in a thread before the goal is known; what it says
    while the person types is told when the goal takes it."""

    def __init__(self, prepare: Callable[[Note], tuple[Any, Executor]]):
        self._said: list[str] = []
        self._note: Note = self._said.append  # the sandbox and workspace say things for as long as they live
        self._prepared: tuple[Any, Executor] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(prepare,), daemon=True)
        self._thread.start()

    def _run(self, prepare: Callable[[Note], tuple[Any, Executor]]) -> None:
        try:
            self._prepared = prepare(lambda text: self._note(text))
        except BaseException as exc:
            self._error = exc

    def take(self, note: Note) -> tuple[Any, Executor]:
        self._thread.join()
        self._note = note
        for line in self._said:
            note(line)
        if self._error is not None:
            raise self._error
        assert self._prepared is not None
        return self._prepared

    def discard(self) -> None:
        self._thread.join()
        if self._prepared is not None:
            workspace, executor = self._prepared
            executor.close()
            if workspace is not None:
                try:
                    workspace.finish("", "unused")  # nothing ran in it: this only settles its journal
                finally:
                    workspace.close()


def _read_goal() -> str:
    if sys.stdin.isatty():
        return input("> ")
    # Piped in: the prompt goes to stderr, so that stdout holds only the answers.
    click.echo("> ", err=True, nl=False)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")
