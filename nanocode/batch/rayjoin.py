"""Joining a Ray cluster and leaving it, for a batch's driver (nanocode.batch.cluster), and the batch's one
small actor beside its nodes' actors: the back-off every node's model calls pass, and where goals started."""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nanocode.errors import ConfigError

RESOURCE = "nanocode_sandbox"  # how many sandboxes a node hosts: `ray start --resources '{"nanocode_sandbox": 8}'`


class Coordinator:
    """The one actor of a batch: the back-off every node's model calls pass, and where goals started."""

    def __init__(self) -> None:
        self._until = 0.0
        self.holds = 0
        self.news: list[tuple[str, str]] = []

    def hold(self, seconds: float) -> None:
        self.holds += 1
        self._until = max(self._until, time.time() + seconds)

    def until(self) -> float:
        return self._until

    def started(self, goal_id: str, node: str) -> None:
        self.news.append((goal_id, node))

    def heard(self) -> tuple[list[tuple[str, str]], int]:
        news, self.news = self.news, []
        return news, self.holds


def connect(address: str) -> None:
    """Joins the cluster at `address`; one line when Ray is missing, or no node hosts sandboxes."""
    # Never a Ray of its own: Ray starts one on this machine when a call finds no cluster joined (as
    # after Ray Client's connection broke), read as Ray is first imported.
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'nanocode[ray]'") from None
    try:
        _answers(address)
        _join(ray, address)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")  # never Ray's traceback
        raise ConfigError(f"--ray {address}: the Ray cluster cannot be reached ({first})") from None
    if not _offered():
        ray.shutdown()
        raise ConfigError(
            f"--ray {address}: no node of the cluster hosts sandboxes: start its workers with "
            f"`ray start --resources '{{\"{RESOURCE}\": 8}}'`"
        )


def set_aside(log: Path) -> IO[str]:
    """From here on, Ray's own output goes to `log`: its core worker's lines, written to fd 2 (as
    "Attempting to recover 1 lost objects" when the cluster goes), and the tracebacks of threads (a
    gRPC thread's, as Ray Client's channel closes). The batch's own lines go to the stream returned,
    and to sys.stderr: what fd 2 was. NANOCODE_DEBUG leaves everything on stderr."""
    if os.environ.get("NANOCODE_DEBUG"):
        return sys.stderr
    sys.stderr.flush()
    kept = os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(target, 2)
    os.close(target)
    sys.stderr = open(kept, "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - for the process
    threading.excepthook = _logged
    return sys.stderr


def _logged(args: threading.ExceptHookArgs) -> None:
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=sys.__stderr__)


def _answers(address: str) -> None:
    """Something listens at HOST:PORT (with or without ray://); raises OSError at once if not, where
    Ray would retry for minutes, printing as it goes. `auto` is Ray's to find."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if address != "auto" and host and port.isdigit():
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                pass
        except OSError as exc:
            raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


def _join(ray: Any, address: str, tries: int = 3) -> None:
    """ray.init; over Ray Client, tried again when the head's per-client server dies as it starts
    (Ray's "Initialization failure from server", ray-project/ray#63202: a few percent of connections)."""
    for attempt in range(1, tries + 1):
        try:
            with _own_sigterm():
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            # A connection that broke is said in nanocode's words (the cluster went away), not in Ray Client's.
            logging.getLogger("ray.util.client").setLevel(logging.CRITICAL)
            return
        except ConnectionAbortedError:
            if attempt == tries or not address.startswith("ray://"):
                raise
            ray.shutdown()
            time.sleep(attempt)


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """ray.init makes SIGTERM exit the process (sys.exit) from the moment it starts; the batch keeps
    its own handler, which stops the batch and says so."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def here() -> Any:
    """Ray's placement on this process's node, where it has one (the head, for Ray Client)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    except Exception:
        return "DEFAULT"


def _offered() -> float:
    import ray

    return float(ray.cluster_resources().get(RESOURCE, 0))  # type: ignore[no-untyped-call]


def finished() -> None:
    """Leaves the cluster."""
    import ray

    ray.shutdown()
