"""A Ray node's goals: one long-lived actor per node, pinned to it, runs that node's goals in threads
against the node's own engine, with the warm pool and the memory ledger of a local batch. A node
costs one worker process, one engine connection and one check of the engine, and a goal starts on a
sandbox started while the goals before it ran."""

import bisect
import contextlib
import dataclasses
import math
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

from nanocode.batch import results, runner
from nanocode.batch.cleanup import sweep_engine
from nanocode.batch.engines import Slot
from nanocode.batch.ledger import Ledger, size
from nanocode.batch.node import ClusterGate, Folder, node_name, packed, silent
from nanocode.batch.progress import Progress
from nanocode.batch.projects import project_copy
from nanocode.batch.results import Result
from nanocode.batch.runner import Prepared
from nanocode.batch.state import BatchState, Budgets, Planned
from nanocode.errors import Interrupted

NOT_STARTED: dict[str, Any] = {"started": False}  # a goal the node gave back unstarted: the batch stopped


class NodeHost:
    """The actor of one node (see nanocode.batch.cluster): it is given as many goals as it runs at once
    and as many more, which it prepares ahead (workspace and sandbox up: the warm pool); they run in
    the order given, and never hold more memory than the actor reserved through Ray (`memory`), as
    the node's ledger sees to."""

    def __init__(self, memory: int, coordinator: Any):
        self.node = node_name()
        self.coordinator = coordinator
        self.ledger = Ledger(memory, math.inf)
        self.folder = Folder()
        self.state = BatchState(self.folder.path, Budgets(), Progress(1, quiet=True), gate=ClusterGate(coordinator))
        self.lock = threading.Lock()
        self.slot: Slot | None = None
        self.turns = threading.Condition()
        self.line: list[int] = []  # the turns of the goals given to this node that wait for room

    def ready(self) -> str:
        return self.node

    def run(self, planned: Planned, digest: str, project: bytes, turn: int) -> dict[str, Any]:
        """Runs the goal here once there is room, after the goals given out before it (`turn`); its
        result and its results folder as a tar, or NOT_STARTED when the batch stopped first."""
        with self.folder.entered() as admitted:
            return self._sent_back(planned, digest, project, turn) if admitted else NOT_STARTED

    def _sent_back(self, planned: Planned, digest: str, project: bytes, turn: int) -> dict[str, Any]:
        with self._in_line(turn), project_copy(digest, project) as copy:
            here = Planned(planned.goal, dataclasses.replace(planned.settings, project=copy))
            result = self._goal(here, turn)
        if result is None:
            return NOT_STARTED
        folder = results.folder(self.state.out, result.id)
        try:
            return {"result": dataclasses.asdict(result), "folder": packed(folder)}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def stop(self) -> None:
        """Every goal ends at its next step (its sandbox removed at once), keeping what it did; the
        goals not started give their place back."""
        self.state.halt(Interrupted("interrupted: the batch was stopped"))
        self.close()

    def close(self) -> None:
        """Removes whatever this node's goals still have on its engine, and their folder once none runs."""
        if self.slot is not None:
            sweep_engine(self.slot.client)
        self.folder.close()

    @contextlib.contextmanager
    def _in_line(self, turn: int) -> Iterator[None]:
        """The goal in the node's line, in the order the batch gave the goals out (`turn`) whatever
        order they arrive or get ready in, until it leaves the line (it has its room, or ended)."""
        with self.turns:
            bisect.insort(self.line, turn)
        try:
            yield
        finally:
            with self.turns:
                if turn in self.line:
                    self.line.remove(turn)
                self.turns.notify_all()

    def _turn(self, turn: int) -> None:
        """Waits until the goals given out before this one have their room: the ledger alone lets any
        waiting goal take the room that frees, and one may lose to the others for the whole batch."""
        with self.turns:
            while self.line[0] != turn and not self.state.stop.is_set():
                self.turns.wait(0.2)

    def _leave(self, turn: int) -> None:
        with self.turns:
            self.line.remove(turn)
            self.turns.notify_all()

    def _goal(self, planned: Planned, turn: int) -> Result | None:
        import ray

        item = Prepared(planned, Slot(self.node, None, self.ledger))
        started = 0.0
        try:
            item.slot = self._slot(planned)
            runner.prepare(self.state, item, warm=True)
            self._turn(turn)
            item.holds_room = self.ledger.take(*_needs(planned), self.state.stop)
            self._leave(turn)
            if not item.holds_room:
                return None
            started = time.monotonic()
            ray.get(self.coordinator.started.remote(planned.goal.id, self.node))
            return self._run(item, started)
        except Exception as exc:
            if not started and self.state.stop.is_set():
                return None  # its sandbox removed as it started: the batch stopped before the goal did
            outcome, reason = self.state.outcome(exc, lambda m: self._gone(item, m))
            return runner.failed(planned, item.slot, outcome, reason, 0.0)
        finally:
            self._release(item)

    def _run(self, item: Prepared, started: float) -> Result:
        result = runner.run_session(self.state, item, started, lambda m: self._gone(item, m), self.node)
        runner.keep_changes(self.state, item, result, sent_back=True)
        result.seconds = round(time.monotonic() - started, 4)
        return result

    def _release(self, item: Prepared) -> None:
        runner.close(item)
        if item.holds_room:
            self.ledger.give(*_needs(item.planned))

    def _slot(self, planned: Planned) -> Slot:
        """The node's engine, connected and checked (leftovers removed, the image there) once."""
        from nanocode.sandbox import engine
        from nanocode.wiring import open_engine

        with self.lock:
            if self.slot is None:
                client = engine.connect()  # the node's engine: its DOCKER_HOST or Docker context
                slot = Slot(self.node, client, self.ledger)
                slot.engine = open_engine(planned.settings, silent, client)
                self.slot = slot
            return self.slot

    def _gone(self, item: Prepared, message: str) -> str:
        slot = item.slot
        if slot.client is not None and slot.answers():
            return ""
        return f"the Docker engine of the node {slot.name} does not answer ({message})"


def _needs(planned: Planned) -> tuple[int, float]:
    return size(planned.settings.memory), planned.settings.cpus
