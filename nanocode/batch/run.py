"""The batch: goals in a queue, workers per engine, a warm pool ahead of them, budgets over all of them."""

import collections
import contextlib
import dataclasses
import fcntl
import os
import queue
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from nanocode.batch import results
from nanocode.batch.backoff import Backoff
from nanocode.batch.engines import Slot
from nanocode.batch.goal import GoalTranscript, Guarded
from nanocode.batch.goals import Goal
from nanocode.batch.ledger import size
from nanocode.batch.progress import GoalDisplay, Progress
from nanocode.batch.results import CHANGES, Result
from nanocode.errors import BudgetExceeded, ConfigError, EndpointError, Interrupted, NanocodeError
from nanocode.interfaces import Executor
from nanocode.session import Session
from nanocode.settings import Settings
from nanocode.wiring import executor_factory


@dataclass
class Budgets:
    max_cost: float = 0.0  # dollars for the whole batch; 0 is no limit
    max_time: float = 0.0  # seconds for the whole batch; 0 is no limit


@dataclass
class Planned:
    """A goal with its settings, ready to be prepared."""

    goal: Goal
    settings: Settings


@dataclass(eq=False)
class Prepared:
    """A goal whose workspace exists and whose sandbox is up (with the pool), holding its room."""

    planned: Planned
    slot: Slot
    workspace: Any  # nanocode.workspace's: an overlay layer of the project, for this goal only
    executor: Executor | None = None
    display: GoalDisplay | None = None
    transcript: GoalTranscript | None = None  # closed last, after what may still record in it
    released: bool = False


class Batch:
    def __init__(
        self,
        planned: list[Planned],
        slots: list[Slot],
        out: Path,
        budgets: Budgets,
        progress: Progress,
        pool: bool = True,
    ):
        self.planned = planned
        self.slots = slots
        self.out = out
        self.budgets = budgets
        self.progress = progress
        self.pool = pool
        self.gate = Backoff()
        self.queue: collections.deque[Planned] = collections.deque()
        self.taken: set[str] = set()  # goals out of the queue, neither started nor recorded: they may come back
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stopping: NanocodeError | None = None
        self.started = time.monotonic()
        self.spent = 0.0
        self.items: set[Prepared] = set()  # every goal holding a workspace, a sandbox or room
        self.unclosed: list[Any] = []  # workspaces whose removal failed, tried again by sweep()
        self.wrapping: list[threading.Thread] = []  # goals ended, their sandbox and change set in hand
        self.finished: list[Result] = []

    # The batch's run, in the main thread.

    def run(self, skipped: list[Result]) -> int:
        """Runs the goals that have no final result in `skipped`; returns the batch's exit code."""
        done = {r.id for r in skipped}
        self.queue.extend(p for p in self.planned if p.goal.id not in done)
        for planned in self.queue:
            self.progress.queued(planned.goal.id)
        threads = [t for slot in self.slots for t in self._threads(slot)]
        with _signals_interrupt():
            try:
                for thread in threads:
                    thread.start()
                while self._busy(threads):
                    self._check_budgets()
                    time.sleep(0.1)
            except KeyboardInterrupt:
                with _shielded():
                    self._interrupt(threads)
                return self._finish(skipped, interrupted=True)
        return self._finish(skipped)

    def _busy(self, threads: list[threading.Thread]) -> bool:
        with self.lock:
            wrapping = list(self.wrapping)
        return any(t.is_alive() for t in threads + wrapping)

    def _threads(self, slot: Slot) -> list[threading.Thread]:
        ready: queue.Queue[Prepared] = queue.Queue()
        room = threading.Semaphore(slot.workers)  # goals prepared ahead: as many as are about to start
        threads = []
        for _ in range(slot.workers):
            threads.append(threading.Thread(target=self._runner, args=(slot, ready, room), daemon=True))
            if self.pool:
                threads.append(threading.Thread(target=self._preparer, args=(slot, ready, room), daemon=True))
        return threads

    def _check_budgets(self) -> None:
        b = self.budgets
        if b.max_time and time.monotonic() - self.started >= b.max_time:
            self.halt(BudgetExceeded(f"stopped: the batch ran out of time ({b.max_time:g}s, --batch-max-time)"))
        if b.max_cost and self.spent >= b.max_cost:
            self.halt(
                BudgetExceeded(
                    f"stopped: the batch cost ${self.spent:.4f}, reaching its limit of ${b.max_cost:g} "
                    "(--batch-max-cost)"
                )
            )

    def halt(self, why: NanocodeError) -> None:
        """No goal starts from now on, and running goals end at their next step."""
        with self.lock:
            if self.stopping is None:
                self.stopping = why
                self.stop.set()
                self.progress.line(f"batch: {why.format_message()}")

    def _interrupt(self, threads: list[threading.Thread]) -> None:
        """Every sandbox is removed at once through the engine, so that each goal ends at its next call
        and keeps what it did; whatever a goal still holds after a while is removed for it."""
        self.halt(Interrupted("interrupted: the batch was stopped"))
        self.sweep()
        deadline = time.monotonic() + 10
        while self._busy(threads) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            items = list(self.items)
        for item in items:
            self._release(item)
        self.sweep()

    def sweep(self) -> None:
        """Removes what this batch still has on its engines: containers with their socket folders, their
        networks, then the workspaces they held."""
        from nanocode.sandbox import channel, container

        for slot in self.slots:
            if slot.client is None or not slot.alive:
                continue
            with contextlib.suppress(Exception):
                for listed in container.ours(slot.client):
                    if _mine(listed.labels):
                        container.remove(slot.client, listed.id)
                        channel.remove_folders(listed.labels.get("nanocode.goal", "") or listed.name)
            with contextlib.suppress(Exception):  # an allowlisted goal's network, once its containers are gone
                for network in slot.client.api.networks(filters={"label": container.LABEL}):
                    if _mine(network.get("Labels") or {}):
                        with contextlib.suppress(Exception):
                            slot.client.api.remove_network(network["Id"])
            with contextlib.suppress(Exception):  # a layer whose workspace never closed: the volume at least
                for volume in slot.client.api.volumes(filters={"label": container.LABEL}).get("Volumes") or []:
                    if not _mine(volume.get("Labels") or {}):
                        continue
                    _wait_unused(slot.client, volume["Name"])
                    with contextlib.suppress(Exception):
                        slot.client.api.remove_volume(volume["Name"], force=True)
        with self.lock:
            unclosed, self.unclosed = self.unclosed, []
        for workspace in unclosed:  # a workspace cannot go while a container holds it
            with contextlib.suppress(Exception):
                workspace.close()

    def _finish(self, skipped: list[Result], interrupted: bool = False) -> int:
        if not interrupted:
            self.sweep()
        done = {r.id: r for r in skipped + self.finished}
        for planned in self.planned:
            if planned.goal.id not in done:
                done[planned.goal.id] = self._not_run(planned)
        ordered = [done[p.goal.id] for p in self.planned]
        extra = {"interrupted": interrupted, "backoffs": self.gate.holds, "skipped": [r.id for r in skipped]}
        summary = results.summary(ordered, time.monotonic() - self.started, extra)
        self.progress.close()
        (self.out / "summary.json").write_text(_json(summary))
        click.echo(results.table(ordered))  # the summary on stdout, progress on stderr
        click.echo(
            f"batch: {_counts(summary['outcomes'])}, ${summary['cost']:.4f}, {summary['seconds']:.1f}s; "
            f"results in {self.out}"
        )
        if interrupted:
            raise Interrupted("interrupted: the batch was stopped; what finished is kept, and the next run resumes")
        return int(summary["exit_code"])

    def _not_run(self, planned: Planned) -> Result:
        """A goal the batch never started: counted in the summary, and run by the next run."""
        outcome, reason = "stopped", "not started"
        if self.stopping is not None:
            reason += ": " + self.stopping.format_message()
        elif not any(slot.alive for slot in self.slots):
            outcome, reason = "engine", "not started: no engine of the batch answers"
        return Result(planned.goal.id, planned.goal.text, str(planned.settings.project), outcome, reason)

    # The workers, each in a thread of its own.

    def _next(self, slot: Slot) -> Planned | None:
        with self.lock:
            if self.stop.is_set() or not slot.alive or not self.queue:
                return None
            slot.pending += 1
            planned = self.queue.popleft()
            self.taken.add(planned.goal.id)
            return planned

    def _drained(self) -> bool:
        """No goal is left to start: an empty queue alone is not that, as a goal being prepared on an
        engine that goes away comes back to it for another engine's workers."""
        with self.lock:
            return not self.queue and not self.taken

    def _settled(self, planned: Planned) -> None:
        with self.lock:
            self.taken.discard(planned.goal.id)

    def _preparer(self, slot: Slot, ready: "queue.Queue[Prepared]", room: threading.Semaphore) -> None:
        while not self.stop.is_set() and slot.alive:
            if not room.acquire(timeout=0.1):
                continue
            planned = self._next(slot)
            if planned is None:
                room.release()
                if self._drained():
                    return
                time.sleep(0.1)
                continue
            try:
                item = self._prepare(planned, slot, warm=True)
                if item is not None:  # queued before it stops being pending: a runner sees it one way or the other
                    self.progress.state(planned.goal.id, "ready")
                    ready.put(item)
            except Exception as exc:
                self._not_started(planned, slot, exc, 0.0)
                room.release()
            finally:
                with self.lock:
                    slot.pending -= 1

    def _runner(self, slot: Slot, ready: "queue.Queue[Prepared]", room: threading.Semaphore) -> None:
        while True:
            if self.pool:
                try:
                    item = ready.get(timeout=0.1)
                except queue.Empty:
                    over = self.stop.is_set() or not slot.alive or self._drained()
                    if over and ready.empty():
                        return
                    continue
                room.release()
                if self.stop.is_set() or not slot.alive:
                    self._discard(item)
                    continue
                self._run(item, time.monotonic())
            else:
                planned = self._next(slot)
                if planned is None:
                    if self.stop.is_set() or not slot.alive or self._drained():
                        return
                    time.sleep(0.1)
                    continue
                started = time.monotonic()
                try:
                    prepared = self._prepare(planned, slot, warm=False)
                except Exception as exc:
                    self._not_started(planned, slot, exc, time.monotonic() - started)
                    continue
                finally:
                    with self.lock:
                        slot.pending -= 1
                if prepared is not None:
                    self._run(prepared, started)

    def _prepare(self, planned: Planned, slot: Slot, warm: bool) -> Prepared | None:
        """Takes the goal's room, opens its workspace, and (for the pool) starts its sandbox."""
        s = planned.settings
        memory, cpus = _needs(s)
        if not slot.ledger.take(memory, cpus, self.stop):
            self._put_back(planned)
            return None
        self.progress.preparing(planned.goal.id, slot.name if len(self.slots) > 1 else "")
        item = Prepared(planned, slot, None)
        with self.lock:
            self.items.add(item)
        try:
            item.display, item.transcript = self._transcript(planned.goal)
            _, open_workspace, _ = executor_factory(s, slot.engine, _silent, item.transcript)
            assert open_workspace is not None, "a batch runs its goals in sandboxes"
            item.workspace = open_workspace(uuid.uuid4().hex[:12], _silent)
            if warm and not self.stop.is_set():
                item.executor = self._open(item, _silent)
        except BaseException:
            self._release(item)
            raise
        if self.stop.is_set():
            self._discard(item)
            return None
        return item

    def _transcript(self, goal: Goal) -> tuple[GoalDisplay, GoalTranscript]:
        """The goal's results folder, without an earlier run's change set, and its transcript."""
        folder = results.folder(self.out, goal.id)
        shutil.rmtree(folder / CHANGES, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        display = GoalDisplay(self.progress, goal.id)
        return display, GoalTranscript(folder / "transcript.jsonl", display, self._spend)

    def _put_back(self, planned: Planned, why: str = "") -> None:
        self.progress.queued(planned.goal.id, why)  # before a worker can take it again
        with self.lock:
            self.queue.appendleft(planned)
            self.taken.discard(planned.goal.id)

    def _open(self, item: Prepared, note: Callable[[str], None]) -> Executor:
        opener, _, _ = executor_factory(item.planned.settings, item.slot.engine, note, item.transcript)
        return opener(item.workspace, note)

    def _release(self, item: Prepared) -> None:
        """Closes the goal's executor and workspace, and gives back its room; once."""
        with self.lock:
            if item.released:
                return
            item.released = True
            self.items.discard(item)
        if item.executor is not None:
            with contextlib.suppress(Exception):
                item.executor.close()
        if item.workspace is not None:
            try:
                _wait_unused(item.slot.client, getattr(item.workspace, "volume", ""))
                item.workspace.close()
            except Exception:
                with self.lock:
                    self.unclosed.append(item.workspace)
        if item.transcript is not None:
            item.transcript.close()
        item.slot.ledger.give(*_needs(item.planned.settings))

    def _run_settings(self, item: Prepared) -> Settings:
        folder = results.folder(self.out, item.planned.goal.id)
        return dataclasses.replace(
            item.planned.settings,
            transcript=folder / "transcript.jsonl",
            limits=dataclasses.replace(item.planned.settings.limits, outer=self._outer),
        )

    def _outer(self) -> None:
        with self.lock:
            why = self.stopping
        if why is not None:
            raise type(why)(why.format_message())

    def _run(self, item: Prepared, started: float) -> None:
        goal = item.planned.goal
        self._settled(item.planned)  # from now on its outcome is recorded, whatever happens
        folder = results.folder(self.out, goal.id)
        display, transcript = item.display, item.transcript
        assert display is not None and transcript is not None, "made with the goal's workspace"
        self.progress.start(goal.id, item.slot.name if len(self.slots) > 1 else "")
        result = Result(goal.id, goal.text, str(item.planned.settings.project), "crash", engine=item.slot.name)
        try:
            # Not a `with`: the transcript outlives the session, until the sandbox and workspace are gone.
            session = Session(self._run_settings(item), display, item.slot.engine, self.gate, transcript)
            if item.executor is None:
                item.executor = self._open(item, display.note)
            result.ready_seconds = round(time.monotonic() - started, 4)
            result.answer = session.run_goal(goal.text, Guarded(item.executor, self._outer))
            result.outcome = "complete"
        except BaseException as exc:  # a goal's failure is its own, whatever it is
            result.outcome, result.reason = self._outcome(exc, item.slot)
        result.steps, result.cost = transcript.steps, round(transcript.cost, 6)
        result.continuations = max(0, transcript.idle_replies - (result.outcome == "complete"))
        result.prompt_tokens, result.completion_tokens = transcript.prompt_tokens, transcript.completion_tokens
        result.model_seconds = round(transcript.model_seconds, 4)
        # The worker takes its next goal while this one's sandbox goes and its change set is kept;
        # the goal holds its room until then.
        self.progress.state(goal.id, "closing")
        wrap = threading.Thread(target=self._wrap_up, args=(item, result, folder, started), daemon=True)
        with self.lock:
            self.wrapping.append(wrap)
        wrap.start()

    def _wrap_up(self, item: Prepared, result: Result, folder: Path, started: float) -> None:
        if item.executor is not None:
            with contextlib.suppress(Exception):
                item.executor.close()
        try:
            self._keep_changes(item, result, folder)
        except Exception as exc:
            result.reason += f" (the change set could not be kept: {exc})"
        finally:
            self._release(item)
        result.seconds = round(time.monotonic() - started, 4)
        self._record(result)

    def _keep_changes(self, item: Prepared, result: Result, folder: Path) -> None:
        """The goal's change set, kept with the other change sets and copied into its results folder."""
        kept = _finish_workspace(item.workspace, item.planned.goal.text, result.outcome)
        if kept is None:
            return
        shutil.copytree(kept.folder, folder / CHANGES, symlinks=True, dirs_exist_ok=True)
        result.change_set = kept.id
        result.files_changed = [entry.path for entry in kept.manifest.entries]

    def _outcome(self, exc: BaseException, slot: Slot) -> tuple[str, str]:
        message = exc.format_message() if isinstance(exc, NanocodeError) else f"{type(exc).__name__}: {exc}"
        if isinstance(self.stopping, Interrupted):  # whatever failed, it failed because everything was stopped
            return "interrupted", self.stopping.format_message()
        if isinstance(exc, BudgetExceeded):
            batch = isinstance(self.stopping, BudgetExceeded) and message == self.stopping.format_message()
            return ("stopped" if batch else "budget"), message
        if isinstance(exc, EndpointError):
            return "endpoint", message
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            return "interrupted", message or "interrupted"
        if slot.client is not None and not slot.answers():
            self._lose(slot)
            return "engine", f"the Docker engine {slot.name} stopped answering ({message})"
        if isinstance(exc, ConfigError):
            return "config", message
        return "crash", message

    def _lose(self, slot: Slot) -> None:
        with self.lock:
            if slot.alive:
                slot.alive = False
                self.progress.line(f"batch: the engine {slot.name} stopped answering; it gets no more goals")

    def _not_started(self, planned: Planned, slot: Slot, exc: BaseException, seconds: float) -> None:
        """A goal whose workspace or sandbox did not start: on an engine gone, it waits for another."""
        outcome, reason = self._outcome(exc, slot)
        if outcome == "engine":
            self._put_back(planned, reason)
        else:
            self._record(self._failed(planned, slot, outcome, reason, seconds))
            self._settled(planned)

    def _failed(self, planned: Planned, slot: Slot, outcome: str, reason: str, seconds: float) -> Result:
        return Result(
            planned.goal.id,
            planned.goal.text,
            str(planned.settings.project),
            outcome,
            reason,
            seconds=seconds,
            engine=slot.name,
        )

    def _discard(self, item: Prepared) -> None:
        self._release(item)
        gone = "" if item.slot.alive else f"the engine {item.slot.name} stopped answering"
        self._put_back(item.planned, gone)

    def _spend(self, cost: float) -> None:
        with self.lock:
            self.spent += cost
        self._check_budgets()

    def _record(self, result: Result) -> None:
        if result.outcome != "interrupted" or not results.is_done(results.read(self.out, result.id), False):
            results.write(self.out, result)
        with self.lock:
            self.finished.append(result)
        self.progress.end(result)


def _finish_workspace(workspace: Any, goal: str, outcome: str) -> Any:
    """The goal's change set; an interrupt removes containers through the engine, which may still be
    at it (the volume busy) when the goal sees its sandbox gone."""
    from docker.errors import APIError

    for _ in range(50):
        try:
            return workspace.finish(goal, outcome)
        except APIError as exc:
            if exc.status_code != 409:
                raise
            time.sleep(0.1)
    return workspace.finish(goal, outcome)


def _wait_unused(client: Any, volume: str, seconds: float = 10.0) -> None:
    """Until no container holds the volume: one being removed (an interrupt, a sweep) still does. An
    engine that does not answer holds nothing that can be waited for: the workspace closes what it can."""
    from requests import RequestException

    deadline = time.monotonic() + seconds
    while volume and time.monotonic() < deadline:
        try:
            if not client.api.containers(all=True, filters={"volume": volume}):
                return
        except RequestException:
            return
        time.sleep(0.1)


def _silent(text: str) -> None:
    """A sandbox started ahead says nothing: its goal has not started."""


def _needs(settings: Settings) -> tuple[int, float]:
    return size(settings.memory), settings.cpus


def _mine(labels: dict[str, str]) -> bool:
    return (
        labels.get("nanocode.owner.pid") == str(os.getpid())
        and labels.get("nanocode.owner.host") == socket.gethostname()
    )


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


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=1) + "\n"


def _counts(outcomes: dict[str, int]) -> str:
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
