"""What a Ray node's goals share: the batch's back-off as the node sees it, the node's name, the
folder its goals' results are made in, and those results packed to be sent back whole."""

import contextlib
import fcntl
import io
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class Folder:
    """The node's results folder, shared by the goals running in it: the actor's close (a stop, the
    batch's end) removes it once the last goal still running has packed what it did (removed at once,
    it would take with it a goal's transcript not yet sent back), and a goal that arrives after the
    close does not start."""

    def __init__(self) -> None:
        self._held = goal_folder()
        self.path = self._held.__enter__()  # left by close(), or swept by a later goal once this process is gone
        self._lock = threading.Lock()
        self._running = 0
        self._closing = False
        self._open = True

    @contextlib.contextmanager
    def entered(self) -> Iterator[bool]:
        """Whether a goal may run in the folder (it is not closing); if so, the folder stays while it does."""
        with self._lock:
            admitted = not self._closing
            self._running += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._running -= 1
                    self._settle()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._settle()

    def _settle(self) -> None:
        if self._closing and not self._running and self._open:
            self._open = False
            self._held.__exit__(None, None, None)


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


def packed(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar, contextlib.suppress(FileNotFoundError):
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def silent(text: str) -> None:
    """The node says nothing: the submitting machine shows the progress."""
