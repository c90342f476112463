"""A batch's progress on stderr: a table redrawn in place on a terminal, one line per event otherwise."""

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from nanocode.batch.results import Result
from nanocode.display import QuietDisplay, shorten

# A goal's states, in the table's order: waiting for room, its workspace and sandbox being made,
# made and waiting for a worker (the warm pool), running, its sandbox going and its change set kept.
STATES = ("running", "closing", "ready", "preparing", "queued")
ROWS = 20  # the table's height at most; the totals count them all


@dataclass
class Row:
    id: str
    state: str = "queued"
    step: int = 0
    cost: float = 0.0
    started: float | None = None  # when it left the queue


class Progress:
    def __init__(self, total: int, quiet: bool = False, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()
        self.total = total
        self.rows: dict[str, Row] = {}
        self.done: list[Result] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._drawn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.live:
            self._thread = threading.Thread(target=self._redraw_loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """The table goes, so that the summary printed next stays on the screen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()
            self.live = False

    def line(self, text: str) -> None:
        """An event: its own line (above the table on a terminal)."""
        if self.quiet:
            return
        with self._lock:
            self._clear()
            print(shorten(text, 200), file=self.stream, flush=True)
            if self.live and not self._stop.is_set():
                self._draw()

    def queued(self, goal_id: str, why: str = "") -> None:
        """A goal waiting for room and a worker; `why` it came back to the queue, if it did."""
        with self._lock:
            self.rows[goal_id] = Row(goal_id)
        if why:
            self.line(f"[{goal_id}] queued again: {why}")

    def preparing(self, goal_id: str, where: str = "") -> None:
        with self._lock:
            self.rows[goal_id] = Row(goal_id, "preparing", started=time.monotonic())
        self.line(f"[{goal_id}] preparing{' on ' + where if where else ''}")

    def start(self, goal_id: str, where: str = "") -> None:
        with self._lock:
            row = self.rows.setdefault(goal_id, Row(goal_id))
            row.state = "running"
            row.started = row.started or time.monotonic()
        self.line(f"[{goal_id}] started{' on ' + where if where else ''}")

    def step(self, goal_id: str, cost: float) -> None:
        with self._lock:
            row = self.rows.get(goal_id)
            if row is not None:
                row.step += 1
                row.cost = cost

    def state(self, goal_id: str, state: str) -> None:
        with self._lock:
            row = self.rows.get(goal_id)
            if row is not None:
                row.state = state

    def end(self, result: Result) -> None:
        with self._lock:
            self.rows.pop(result.id, None)
            self.done.append(result)
        reason = f": {result.reason}" if result.reason and result.outcome != "complete" else ""
        self.line(
            f"[{result.id}] {result.outcome} after {result.seconds:.1f}s, {result.steps} steps, "
            f"${result.cost:.4f}, {len(result.files_changed)} files changed{reason}"
        )

    def totals(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = len(self.done)
        cost = sum(r.cost for r in self.done) + sum(r.cost for r in self.rows.values())
        left = self.total - finished
        eta = f", about {elapsed / finished * left:.0f}s left" if finished and left else ""
        states = [row.state for row in self.rows.values()]
        counts = "".join(f", {states.count(state)} {state}" for state in STATES if state in states)
        return f"{finished}/{self.total} done{counts}, ${cost:.4f}, {elapsed:.0f}s{eta}"

    def _redraw_loop(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._clear()
                self._draw()

    def _draw(self) -> None:
        lines = [f"{'id':<16} {'state':<9} {'step':>4} {'cost':>9} {'elapsed':>8}"]
        rows = sorted(self.rows.values(), key=lambda row: STATES.index(row.state))
        lines += [_row(row, time.monotonic()) for row in rows[:ROWS]]
        if len(rows) > ROWS:
            lines.append(f"... and {len(rows) - ROWS} more")
        lines.append(self.totals())
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


def _row(row: Row, now: float) -> str:
    elapsed = f"{now - row.started:>7.0f}s" if row.started is not None else f"{'-':>8}"
    return f"{row.id[:16]:<16} {row.state:<9} {row.step:>4} {row.cost:>9.4f} {elapsed}"


class GoalDisplay(QuietDisplay):
    """The Display of one goal of a batch: steps and cost go to the table, notes to a line."""

    def __init__(self, progress: Progress, goal_id: str):
        self.progress = progress
        self.goal_id = goal_id
        self.cost = 0.0

    @contextmanager
    def waiting(self) -> Iterator[None]:
        self.progress.step(self.goal_id, self.cost)
        yield

    def note(self, text: str) -> None:
        self.progress.line(f"[{self.goal_id}] {text}")
