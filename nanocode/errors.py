"""Errors a user sees, each with its own exit code (listed in the README)."""

from typing import IO, Any

import click

EXIT_COMPLETE = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_ENDPOINT = 4
EXIT_BUDGET = 5
EXIT_CONFLICT = 6
EXIT_INTERRUPTED = 130


class NanocodeError(click.ClickException):
    """One clear line on stderr and a distinct exit code; never a traceback."""

    exit_code = EXIT_INTERNAL

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"nanocode: {self.format_message()}", err=True, file=file)


def internal(exc: BaseException) -> str:
    """The one line of an error nanocode did not foresee (NANOCODE_DEBUG=1 prints its traceback)."""
    return f"internal error: {type(exc).__name__}: {exc} (NANOCODE_DEBUG=1 shows the traceback)"


class UsageError(NanocodeError):
    """A value on the command line that cannot mean anything (a malformed --allow-host rule)."""

    exit_code = EXIT_USAGE


class ConfigError(NanocodeError):
    """Bad settings, or something nanocode needs is missing (key, Docker, image)."""

    exit_code = EXIT_CONFIG


class EndpointError(NanocodeError):
    """The model endpoint refused, failed, or could not be reached."""

    exit_code = EXIT_ENDPOINT

    def __init__(self, message: str, status: int | None = None, refusal: Any = None):
        super().__init__(message)
        self.status = status
        # A nanocode.model.refusals.Refusal: the prompt was longer than the model's context window.
        self.refusal = refusal

    @property
    def context_exceeded(self) -> bool:
        return self.refusal is not None


class BudgetExceeded(NanocodeError):
    """A per-goal budget ran out before the model finished the goal."""

    exit_code = EXIT_BUDGET


class NoProgress(BudgetExceeded):
    """The model repeated the same tool call with the same result until the circuit breaker stopped it."""

    outcome = "no progress"


class ApplyError(NanocodeError):
    """The change set was not applied: conflicts, a refused path, or a failure undone. Here, where both
    the applier and the commit series can raise it without importing each other."""

    exit_code = EXIT_CONFLICT


class Interrupted(NanocodeError):
    """Ctrl-C or SIGTERM: the goal was stopped and everything it started removed."""

    exit_code = EXIT_INTERRUPTED
    terminated = False  # SIGTERM or SIGHUP, which end nanocode, where Ctrl-C ends only the goal


class FileOpError(Exception):
    """A read_file or write_file that failed; the model gets the message."""
