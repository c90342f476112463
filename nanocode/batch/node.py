"""One goal on the Ray node that runs it: the project from the object store (unpacked once per node),
the node's own Docker engine, the shared goal runner, and the goal's results folder sent back whole."""

import contextlib
import dataclasses
import fcntl
import io
import math
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanocode.batch import results, runner
from nanocode.batch.engines import Slot
from nanocode.batch.ledger import Ledger
from nanocode.batch.progress import Progress
from nanocode.batch.projects import project_copy
from nanocode.batch.results import Result
from nanocode.batch.runner import Prepared
from nanocode.batch.state import BatchState, Budgets, Planned
from nanocode.workspace import paths


class ClusterGate:
    """The batch's back-off as one node sees it: a hold asked for here holds every node (see
    nanocode.batch.cluster's Coordinator); wall-clock times, as nodes share no monotonic clock."""

    def __init__(self, coordinator: Any):
        self.coordinator = coordinator
        self.holds = 0

    def hold(self, seconds: float) -> None:
        import ray

        self.holds += 1
        ray.get(self.coordinator.hold.remote(seconds))
        self.wait()

    def wait(self) -> None:
        import ray

        while (left := ray.get(self.coordinator.until.remote()) - time.time()) > 0:
            time.sleep(min(left, 0.5))


def node_name() -> str:
    """The node as the progress table and result.json name it: its host and Ray's node id, short."""
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def run_goal(planned: Planned, digest: str, project: bytes, coordinator: Any) -> dict[str, Any]:
    """Runs the goal here; its result and its results folder (transcript, change set) as a tar."""
    import ray

    node = node_name()
    ray.get(coordinator.started.remote(planned.goal.id, node))
    with goal_folder() as out, project_copy(digest, project) as copy:
        result = _run(planned, copy, out, coordinator, node)
        return {"result": dataclasses.asdict(result), "folder": _packed(results.folder(out, result.id))}


@contextlib.contextmanager
def goal_folder() -> Iterator[Path]:
    """The goal's results folder on this node, held by a lock on a file in it for as long as the goal
    runs. The kernel ends the lock with its process, so a goal whose task was killed (its node gone,
    a cancel) leaves a folder that the next goal on the node finds held by no one, and removes."""
    root = paths.state() / "ray-goals"
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    hidden = Path(tempfile.mkdtemp(prefix=".", dir=root))  # not swept while its lock is not yet taken
    with open(hidden / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder = hidden.with_name(hidden.name[1:])
        hidden.rename(folder)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _sweep(root: Path) -> None:
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        try:
            with open(child / ".lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its goal runs
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            continue


def _run(planned: Planned, project: Path, out: Path, coordinator: Any, node: str) -> Result:
    from nanocode.sandbox import engine
    from nanocode.wiring import open_engine

    here = Planned(planned.goal, dataclasses.replace(planned.settings, project=project))
    state = BatchState(out, Budgets(), Progress(1, quiet=True), gate=ClusterGate(coordinator))
    started = time.monotonic()
    item = Prepared(here, Slot(node, None, Ledger(0, math.inf)))
    try:
        client = engine.connect()  # the node's engine: its DOCKER_HOST or Docker context
        item.slot.client = client
        item.slot.engine = open_engine(here.settings, _silent, client)
        runner.prepare(state, item, warm=False)
        result = runner.run_session(state, item, started, lambda m: _gone(item, m), node)
        runner.keep_changes(state, item, result, sent_back=True)
    except Exception as exc:
        outcome, reason = state.outcome(exc, lambda m: _gone(item, m))
        result = runner.failed(here, item.slot, outcome, reason, 0.0)
    finally:
        runner.close(item)
    result.seconds = round(time.monotonic() - started, 4)
    return result


def _gone(item: Prepared, message: str) -> str:
    slot = item.slot
    if slot.client is not None and slot.answers():
        return ""
    return f"the Docker engine of the node {slot.name} does not answer ({message})"


def _packed(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar, contextlib.suppress(FileNotFoundError):
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def _silent(text: str) -> None:
    """The node says nothing: the submitting machine shows the progress."""
