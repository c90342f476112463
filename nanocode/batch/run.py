"""The batch's run, whatever runs its goals: budgets watched, Ctrl-C and SIGTERM turned into a clean
stop, and the summary of every goal, run or not."""

import contextlib
import fcntl
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from nanocode.batch import results
from nanocode.batch.results import Result
from nanocode.batch.scheduler import Scheduler
from nanocode.batch.state import BatchState, Planned
from nanocode.errors import ConfigError, Interrupted


class Batch:
    def __init__(self, planned: list[Planned], state: BatchState, scheduler: Scheduler):
        self.planned = planned
        self.state = state
        self.scheduler = scheduler

    def run(self, skipped: list[Result]) -> int:
        """Runs the goals that have no final result in `skipped`; returns the batch's exit code."""
        done = {r.id for r in skipped}
        todo = [p for p in self.planned if p.goal.id not in done]
        for planned in todo:
            self.state.progress.queued(planned.goal.id)
        with _signals_interrupt():
            try:
                self.scheduler.start(todo)
                while self.scheduler.busy():
                    self.state.check_budgets()
                    time.sleep(0.1)
            except KeyboardInterrupt:
                with _shielded():
                    self.scheduler.interrupt()
                return self._finish(skipped, interrupted=True)
        return self._finish(skipped)

    def _finish(self, skipped: list[Result], interrupted: bool = False) -> int:
        if not interrupted:
            self.scheduler.sweep()
        state = self.state
        done = {r.id: r for r in skipped + state.finished}
        for planned in self.planned:
            if planned.goal.id not in done:
                done[planned.goal.id] = self._not_run(planned)
        ordered = [done[p.goal.id] for p in self.planned]
        extra = {"interrupted": interrupted, "backoffs": state.gate.holds, "skipped": [r.id for r in skipped]}
        state.progress.close()
        code = report(state.out, ordered, time.monotonic() - state.started, extra)
        if interrupted:
            raise Interrupted("interrupted: the batch was stopped; what finished is kept, and the next run resumes")
        return code

    def _not_run(self, planned: Planned) -> Result:
        """A goal the batch never started: counted in the summary, and run by the next run."""
        outcome, reason = "stopped", "not started"
        if self.state.stopping is not None:
            reason += ": " + self.state.stopping.format_message()
        elif why := self.scheduler.unreachable():
            outcome, reason = "engine", f"not started: {why}"
        return Result(planned.goal.id, planned.goal.text, str(planned.settings.project), outcome, reason)


def report(out: Path, ordered: list[Result], seconds: float, extra: dict[str, Any]) -> int:
    """summary.json, and the summary on stdout (progress is on stderr); the batch's exit code."""
    summary = results.summary(ordered, seconds, extra)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    click.echo(results.table(ordered))
    counts, cost = _counts(summary["outcomes"]), summary["cost"]
    click.echo(f"batch: {counts}, ${cost:.4f}, {summary['seconds']:.1f}s; results in {out}")
    return int(summary["exit_code"])


@contextlib.contextmanager
def locked(out: Path) -> Iterator[IO[str]]:
    """One batch at a time in an --out folder."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another batch is running in {out}") from None
        yield handle


def _counts(outcomes: dict[str, Any]) -> str:
    return ", ".join(f"{n} {name}" for name, n in outcomes.items()) or "no goals"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the batch the way Ctrl-C does."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
