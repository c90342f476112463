"""Goals on this machine's Docker engines (`--engine`): a queue, workers per engine, a warm pool ahead
of them, and each engine's ledger of memory and CPUs."""

import collections
import queue
import threading
import time

from nanocode.batch import runner
from nanocode.batch.cleanup import sweep_engine
from nanocode.batch.engines import Slot
from nanocode.batch.ledger import size
from nanocode.batch.results import Result
from nanocode.batch.runner import Prepared
from nanocode.batch.state import BatchState, Planned
from nanocode.errors import Interrupted
from nanocode.settings import Settings


class LocalEngines:
    """The local-engines scheduler (see nanocode.batch.scheduler)."""

    def __init__(self, state: BatchState, slots: list[Slot], pool: bool = True):
        self.state = state
        self.slots = slots
        self.pool = pool
        self.lock = state.lock
        self.stop = state.stop
        self.queue: collections.deque[Planned] = collections.deque()
        self.taken: set[str] = set()  # goals out of the queue, neither started nor recorded: they may come back
        self.items: set[Prepared] = set()  # every goal holding a workspace, a sandbox or room
        self.unclosed: list[object] = []  # workspaces whose removal failed, tried again by sweep()
        self.threads: list[threading.Thread] = []
        self.wrapping: list[threading.Thread] = []  # goals ended, their sandbox and change set in hand

    def start(self, todo: list[Planned]) -> None:
        self.queue.extend(todo)
        self.threads = [t for slot in self.slots for t in self._threads(slot)]
        for thread in self.threads:
            thread.start()

    def busy(self) -> bool:
        with self.lock:
            wrapping = list(self.wrapping)
        return any(t.is_alive() for t in self.threads + wrapping)

    def interrupt(self) -> None:
        """Every sandbox is removed at once through the engine, so that each goal ends at its next call
        and keeps what it did; whatever a goal still holds after a while is removed for it."""
        self.state.halt(Interrupted("interrupted: the batch was stopped"))
        self.sweep()
        deadline = time.monotonic() + 10
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            items = list(self.items)
        for item in items:
            self._release(item)
        self.sweep()

    def sweep(self) -> None:
        for slot in self.slots:
            if slot.client is not None and slot.alive:
                sweep_engine(slot.client)
        with self.lock:
            unclosed, self.unclosed = self.unclosed, []
        for workspace in unclosed:  # a workspace cannot go while a container holds it
            try:
                workspace.close()  # type: ignore[attr-defined]
            except Exception:
                continue

    def unreachable(self) -> str:
        return "" if any(slot.alive for slot in self.slots) else "no engine of the batch answers"

    def _threads(self, slot: Slot) -> list[threading.Thread]:
        ready: queue.Queue[Prepared] = queue.Queue()
        room = threading.Semaphore(slot.workers)  # goals prepared ahead: as many as are about to start
        threads = []
        for _ in range(slot.workers):
            threads.append(threading.Thread(target=self._runner, args=(slot, ready, room), daemon=True))
            if self.pool:
                threads.append(threading.Thread(target=self._preparer, args=(slot, ready, room), daemon=True))
        return threads

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

    def _over(self, slot: Slot) -> bool:
        return self.stop.is_set() or not slot.alive or self._drained()

    def _done_taking(self, slot: Slot) -> None:
        with self.lock:
            slot.pending -= 1

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
                    self.state.progress.state(planned.goal.id, "ready")
                    ready.put(item)
            except Exception as exc:
                self._not_started(planned, slot, exc, 0.0)
                room.release()
            finally:
                self._done_taking(slot)

    def _runner(self, slot: Slot, ready: "queue.Queue[Prepared]", room: threading.Semaphore) -> None:
        while self._run_one(slot, ready, room):
            pass

    def _run_one(self, slot: Slot, ready: "queue.Queue[Prepared]", room: threading.Semaphore) -> bool:
        """Runs the next goal (from the warm pool or the queue); False once there is none to come."""
        if self.pool:
            try:
                item = ready.get(timeout=0.1)
            except queue.Empty:
                return not (self._over(slot) and ready.empty())
            room.release()
            started = time.monotonic()
            if self.stop.is_set() or not slot.alive or not self._take_room(item):
                self._discard(item)
            else:
                self._run(item, started)
            return True
        planned = self._next(slot)
        if planned is None:
            if self._over(slot):
                return False
            time.sleep(0.1)
            return True
        started = time.monotonic()
        try:
            prepared = self._prepare(planned, slot, warm=False)
        except Exception as exc:
            self._not_started(planned, slot, exc, time.monotonic() - started)
            return True
        finally:
            self._done_taking(slot)
        if prepared is not None:
            self._run(prepared, started)
        return True

    def _prepare(self, planned: Planned, slot: Slot, warm: bool) -> Prepared | None:
        """Opens the goal's workspace and, for the pool, starts its sandbox. A goal prepared ahead takes
        no room in the ledger until it runs: an idle sandbox uses a few megabytes, not its --memory
        ceiling, and counting it would keep the pool from preparing the next wave while one runs."""
        item = Prepared(planned, slot)
        if not warm and not self._take_room(item):
            self._put_back(planned)
            return None
        self.state.progress.preparing(planned.goal.id, self._shown(slot))
        with self.lock:
            self.items.add(item)
        try:
            runner.prepare(self.state, item, warm)
        except BaseException:
            self._release(item)
            raise
        if self.stop.is_set():
            self._discard(item)
            return None
        return item

    def _shown(self, slot: Slot) -> str:
        return slot.name if len(self.slots) > 1 else ""

    def _put_back(self, planned: Planned, why: str = "") -> None:
        self.state.progress.queued(planned.goal.id, why)  # before a worker can take it again
        with self.lock:
            self.queue.appendleft(planned)
            self.taken.discard(planned.goal.id)

    def _release(self, item: Prepared) -> None:
        """Closes the goal's executor and workspace, and gives back its room; once."""
        with self.lock:
            if item.released:
                return
            item.released = True
            self.items.discard(item)
        unclosed = runner.close(item)
        if unclosed is not None:
            with self.lock:
                self.unclosed.append(unclosed)
        if item.holds_room:
            item.slot.ledger.give(*_needs(item.planned.settings))

    def _take_room(self, item: Prepared) -> bool:
        """Waits for the goal's --memory and --cpus in its engine's ledger; False when the batch stops."""
        item.holds_room = item.slot.ledger.take(*_needs(item.planned.settings), self.stop)
        return item.holds_room

    def _run(self, item: Prepared, started: float) -> None:
        self._settled(item.planned)  # from now on its outcome is recorded, whatever happens
        slot = item.slot
        result = runner.run_session(self.state, item, started, lambda m: self._gone(slot, m), self._shown(slot))
        # The worker takes its next goal while this one's sandbox goes and its change set is kept;
        # the goal holds its room until then.
        self.state.progress.state(item.planned.goal.id, "closing")
        wrap = threading.Thread(target=self._wrap_up, args=(item, result, started), daemon=True)
        with self.lock:
            self.wrapping.append(wrap)
        wrap.start()

    def _wrap_up(self, item: Prepared, result: Result, started: float) -> None:
        try:
            runner.keep_changes(self.state, item, result)
        finally:
            self._release(item)
        result.seconds = round(time.monotonic() - started, 4)
        self.state.record(result)

    def _gone(self, slot: Slot, message: str) -> str:
        """Why the goal's engine is gone, or "" while it answers; a gone engine gets no more goals."""
        if slot.client is None or slot.answers():
            return ""
        with self.lock:
            if slot.alive:
                slot.alive = False
                self.state.progress.line(f"batch: the engine {slot.name} stopped answering; it gets no more goals")
        return f"the Docker engine {slot.name} stopped answering ({message})"

    def _not_started(self, planned: Planned, slot: Slot, exc: BaseException, seconds: float) -> None:
        """A goal whose workspace or sandbox did not start: on an engine gone, it waits for another."""
        outcome, reason = self.state.outcome(exc, lambda m: self._gone(slot, m))
        if outcome == "engine":
            self._put_back(planned, reason)
        else:
            self.state.record(runner.failed(planned, slot, outcome, reason, seconds))
            self._settled(planned)

    def _discard(self, item: Prepared) -> None:
        self._release(item)
        gone = "" if item.slot.alive else f"the engine {item.slot.name} stopped answering"
        self._put_back(item.planned, gone)


def _needs(settings: Settings) -> tuple[int, float]:
    return size(settings.memory), settings.cpus
