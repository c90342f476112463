"""Goals on a Ray cluster (`--ray ADDRESS`): each goal runs whole on one node, against that node's Docker
engine, in the node's actor (nanocode.batch.host); each project packed once into the object store;
one actor holds the batch's back-off and hears where each goal started."""

import collections
import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanocode.batch import results
from nanocode.batch.ledger import size
from nanocode.batch.pulse import SILENT, Pulse
from nanocode.batch.rayjoin import RESOURCE, Coordinator, here
from nanocode.batch.results import CHANGES, Result
from nanocode.batch.state import BatchState, Planned
from nanocode.errors import Interrupted
from nanocode.workspace import store

ATTEMPTS = 3  # runs of a goal whose node died under it
SILENCE = f"nothing from its GCS for {SILENT:.0f} s"


class _Flight:
    """A goal submitted, and what the submitting machine knows of it."""

    def __init__(self, planned: Planned, attempt: int):
        self.planned = planned
        self.attempt = attempt
        self.node = ""
        self.host: _Host | None = None
        self.lost: list[str] = []  # why earlier runs ended without a result: their nodes died


@dataclass(eq=False)
class _Host:
    """A node's actor (nanocode.batch.host) and the goals it was given."""

    node_id: str
    slots: int
    actor: Any
    hello: Any  # the actor's first answer
    ready: bool  # given goals: at once, but on a node whose earlier actor died, once it answers
    flights: set[Any] = field(default_factory=set)


class RayCluster:
    """The Ray scheduler (see nanocode.batch.scheduler): goals go, in order, to the node whose actor
    has the most room, each actor given as many goals as it runs at once and as many more for its pool."""

    def __init__(self, state: BatchState):
        self.state = state
        self.flights: dict[Any, _Flight] = {}
        self.queue: collections.deque[_Flight] = collections.deque()
        self.hosts: dict[str, _Host] = {}  # by Ray node id
        self.dead: set[str] = set()  # nodes where no actor could start: the GCS may say they live a while yet
        self.lost: set[str] = set()  # nodes whose actor died during the batch
        self.died = 0.0  # when the last of them was found dead: the GCS's answers before it may still offer it
        self.projects: dict[str, tuple[str, Any]] = {}
        self.coordinator: Any = None
        self.hearing: Any = None  # the coordinator's answer on its way
        self.pulse = Pulse()
        self.gone = ""  # why the cluster is taken for gone
        self.memory = 0  # a goal's --memory
        self.goals = 0  # in the batch: no node's actor reserves room for more
        self.turns = 0  # goals given out: a node starts those it was given in this order

    def start(self, todo: list[Planned]) -> None:
        import ray

        if not todo:
            return
        # On the submitting machine's node where it has one (the head, for Ray Client); restarted, with
        # a back-off forgotten, if its node dies all the same.
        self.coordinator = (
            ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Coordinator)
            .options(scheduling_strategy=here())
            .remote()
        )
        self.memory = size(todo[0].settings.memory)
        self.goals = len(todo)
        self.queue.extend(_Flight(planned, 1) for planned in todo)
        self.pulse.start()
        self._dispatch()

    def busy(self) -> bool:
        if self.pulse.gone():
            return self._lose_all(SILENCE)
        try:
            self._hear()
            self._land()
            self._greet()
            self._dispatch()
        except _cut_off() as exc:
            return self._lose_all(str(exc).strip().rstrip("."))
        if self.flights:
            return True
        if not self.queue or self.state.stop.is_set():
            return False
        if self.hosts or self.pulse.answered <= self.died:  # no node for now: until the GCS says
            return True
        self._record_lost(self.unreachable())  # the others never started: the summary says why
        return False

    def _greet(self) -> None:
        """An actor that answered is given goals; one that could not start marks its node dead."""
        import ray

        for host in [h for h in self.hosts.values() if h.hello is not None]:
            if not ray.wait([host.hello], timeout=0)[0]:
                continue
            try:
                ray.get(host.hello)
                host.ready, host.hello = True, None
            except Exception:  # its node is gone (ActorUnschedulableError), or its worker could not start
                del self.hosts[host.node_id]
                self.dead.add(host.node_id)
                self.died = time.monotonic()

    def _land(self) -> None:
        import ray

        if self.flights:
            ready, _ = ray.wait(list(self.flights), num_returns=len(self.flights), timeout=0)
            for ref in ready:
                self._landed(ref, self.flights.pop(ref))

    def interrupt(self) -> None:
        """Stops every node's goals: each ends at its next step, its sandbox removed, and its node sends
        back what it did (its transcript, its change set); the submitting machine records them as
        interrupted, to run again, those that did not come back in time too."""
        import ray

        self.state.halt(Interrupted("interrupted: the batch was stopped"))
        self.queue.clear()
        try:
            for host in self.hosts.values():
                host.actor.stop.remote()
            ready, _ = (
                ray.wait(list(self.flights), num_returns=len(self.flights), timeout=10) if self.flights else ([], [])
            )
            self._hear(wait=2.0)  # a goal that started since the last look was interrupted, not "not started"
        except _cut_off() as exc:
            self._lose_all(str(exc).strip().rstrip("."))
            return
        for ref, flight in self.flights.items():
            if ref in ready and self._came_back(ref, flight):
                continue
            if flight.node:
                message = self.state.stopping.format_message() if self.state.stopping else "interrupted"
                self.state.record(self._failed(flight, "interrupted", message))
        self.flights.clear()
        self.sweep()

    def sweep(self) -> None:
        """Each node's actor removes what its goals still have on its engine, and their folder."""
        import ray

        self.pulse.stop()
        closing = [host.actor.close.remote() for host in self.hosts.values()]
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=10)

    def unreachable(self) -> str:
        if self.gone:
            return self.gone
        lost = (
            f" ({len(self.dead | self.lost)} of its nodes were lost during the batch)" if self.dead | self.lost else ""
        )
        return "" if self._usable() else f"no live node of the Ray cluster hosts {RESOURCE}{lost}"

    def _lose_all(self, detail: str) -> bool:
        """The cluster is gone: the goals on it are recorded as ended with it, the goals still to run
        are left (the summary says why they never started), and the nodes are not asked anything more.
        Their sandboxes end with their lease, on each node's engine. False: the batch is not busy."""
        self.gone = f"the Ray cluster went away ({detail})"
        self.state.progress.line(f"batch: {self.gone}; its goals that had started are recorded as engine failures")
        self.queue.extend(self.flights.values())
        self.flights.clear()
        self.hosts.clear()
        return self._record_lost(self.gone)

    def _record_lost(self, why: str) -> bool:
        """The queued goals that had started, on a node that died or on the way, are recorded as ended
        with `why`; the others never started (the summary says so, and the next run runs them). False."""
        for flight in self.queue:
            if flight.node or flight.lost:
                self.state.record(self._failed(flight, "engine", "; ".join([*flight.lost, why])))
        self.queue.clear()
        return False

    def _dispatch(self) -> None:
        """Gives the queued goals to the actors with room, the emptiest first; a node that joined the
        cluster since gets an actor of its own."""
        if self.state.stop.is_set():
            return
        if self.queue:
            self._discover()
        while self.queue:
            ready = (h for h in self.hosts.values() if h.ready)
            host = min(ready, key=lambda h: len(h.flights) / h.slots, default=None)
            if host is None or len(host.flights) >= 2 * host.slots:
                return
            self._submit(self.queue.popleft(), host)

    def _discover(self) -> None:
        for node_id, slots in self._usable().items():
            if node_id not in self.hosts:
                actor = self._actor(node_id, slots)
                self.hosts[node_id] = _Host(node_id, slots, actor, actor.ready.remote(), node_id not in self.lost)

    def _usable(self) -> dict[str, int]:
        """The live nodes this batch may use, and how many of its goals each can run at once: as many
        sandboxes as it offers and as its memory holds, and no more than the batch's goals."""
        usable = {}
        for node in self.pulse.nodes:
            have = node.get("Resources") or {}
            slots = min(int(have.get(RESOURCE, 0)), int(have.get("memory", 0) // max(self.memory, 1)), self.goals)
            if node.get("Alive") and slots >= 1 and node["NodeID"] not in self.dead:
                usable[node["NodeID"]] = slots
        return usable

    def _actor(self, node_id: str, slots: int) -> Any:
        """The node's actor, pinned to it; it reserves the node's sandboxes, and their memory, through Ray."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from nanocode.batch.host import NodeHost

        reserved = slots * self.memory
        return (
            ray.remote(NodeHost)
            .options(
                num_cpus=0,
                resources={RESOURCE: slots},
                memory=reserved,
                max_concurrency=2 * slots + 4,  # its goals, and a stop or a close beside them
                max_restarts=0,  # a node that dies: its goals resubmitted here, so that their outcome says so
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(reserved, self.coordinator)
        )

    def _submit(self, flight: _Flight, host: _Host) -> None:
        digest, project = self._project(str(flight.planned.settings.project))
        # Queued, as a local batch says of a goal waiting for room, until its node says it started.
        self.turns += 1
        run = host.actor.run.options(name=f"goal {flight.planned.goal.id}")
        ref = run.remote(flight.planned, digest, project, self.turns)
        flight.host = host
        host.flights.add(ref)
        self.flights[ref] = flight

    def _project(self, project: str) -> tuple[str, Any]:
        """The project packed once (secrets left out, as for a remote engine) into the object store."""
        import ray

        from nanocode.workspace.remote import project_tar

        if project not in self.projects:
            buffer = io.BytesIO()
            project_tar(project, buffer)
            data = buffer.getvalue()
            self.projects[project] = (hashlib.sha256(data).hexdigest(), ray.put(data))
            self.state.progress.line(f"batch: {project} packed once ({len(data) / 1e6:.1f} MB) into Ray's object store")
        return self.projects[project]

    def _hear(self, wait: float = 0) -> None:
        """What the coordinator heard since the last answer, once it answers: never waited for longer
        than `wait`, as an actor restarting (its node died) or a cluster gone answers late or never."""
        import ray
        from ray.exceptions import RayError

        if self.coordinator is None:
            return
        if self.hearing is None:
            self.hearing = self.coordinator.heard.remote()
        ready, _ = ray.wait([self.hearing], timeout=wait)
        if not ready:
            return
        try:
            news, holds = ray.get(self.hearing)
        except RayError:  # the actor died with what it heard: where goals started is shown when they end
            return
        finally:
            self.hearing = None
        self.state.gate.holds = holds
        started = {goal_id: node for goal_id, node in news}
        for flight in self.flights.values():
            if flight.planned.goal.id in started:
                flight.node = started[flight.planned.goal.id]
                self.state.progress.start(flight.planned.goal.id, flight.node)

    def _landed(self, ref: Any, flight: _Flight) -> None:
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        if flight.host is not None:
            flight.host.flights.discard(ref)
        try:
            payload = ray.get(ref)
        except TaskCancelledError:
            return
        except RayTaskError as exc:
            self.state.record(self._failed(flight, "crash", str(exc).splitlines()[-1]))
            return
        except _cut_off():  # the whole cluster, not this node
            raise
        except Exception as exc:  # the node, its worker or its object store went away
            self._lost(flight, exc)
            return
        if payload.get("started", True):
            self.state.record(self._arrived(flight, payload))

    def _came_back(self, ref: Any, flight: _Flight) -> bool:
        """Whether a goal that ended as the batch was stopped ended whole, its result recorded."""
        import ray

        try:
            payload = ray.get(ref, timeout=0)
        except Exception:  # cancelled, or gone with its node
            return False
        if not payload.get("started", True):
            return False
        result = self._arrived(flight, payload)
        if result.outcome == "interrupted" and self.state.stopping is not None:  # said as a local batch says it
            result.reason = self.state.stopping.format_message()
        self.state.record(result)
        return True

    def _lost(self, flight: _Flight, exc: Exception) -> None:
        if flight.host is not None and self.hosts.get(flight.host.node_id) is flight.host:
            # Its actor is gone, with its node or alone (Ray's memory monitor): the node gets a new
            # actor, given goals once it answers, while the GCS says it lives.
            del self.hosts[flight.host.node_id]
            self.lost.add(flight.host.node_id)
        where = f"on {flight.node} " if flight.node else ""
        flight.lost.append(f"run {flight.attempt} {where}ended with its node ({type(exc).__name__})")
        if flight.attempt >= ATTEMPTS or self.state.stop.is_set():
            self.state.record(self._failed(flight, "engine", "; ".join(flight.lost)))
            return
        self.state.progress.queued(flight.planned.goal.id, flight.lost[-1])
        again = _Flight(flight.planned, flight.attempt + 1)
        again.lost = flight.lost
        self.queue.appendleft(again)

    def _arrived(self, flight: _Flight, payload: dict[str, Any]) -> Result:
        """The goal's result, its transcript and change set unpacked under --out, the change set's
        project made the submitting machine's again."""
        result = Result(**payload["result"])
        result.project = str(flight.planned.settings.project)
        if flight.lost:
            result.reason = "; ".join([*flight.lost, *([result.reason] if result.reason else [])])
        folder = results.folder(self.state.out, result.id)
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(payload["folder"])) as tar:
            # result.json is this machine's to write (record), once the result is whole.
            sent = [m for m in tar.getmembers() if os.path.normpath(m.name) != "result.json"]
            tar.extractall(folder, members=sent, filter="data")
        _reproject(folder / CHANGES / "manifest.json", result.project)
        store.adopt(folder / CHANGES, result.change_set)
        return result

    def _failed(self, flight: _Flight, outcome: str, reason: str) -> Result:
        goal = flight.planned.goal
        return Result(goal.id, goal.text, str(flight.planned.settings.project), outcome, reason, engine=flight.node)


def _cut_off() -> tuple[type[Exception], ...]:
    """What Ray raises when the cluster cannot be reached at all: Ray Client's connection broke, or a
    call to the GCS failed (RpcError: a driver's, as when it registers a node's new actor)."""
    from ray.exceptions import RpcError

    return ConnectionError, RpcError


def _reproject(manifest: Path, project: str) -> None:
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["project"] = project
        manifest.write_text(json.dumps(data), encoding="utf-8")
