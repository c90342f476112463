"""Containers that others create on this engine while the benchmark runs: they compete with what is
measured.

The benchmark's own containers are made by itself and by the processes it starts (`nanocode batch`,
`nanocode` at the prompt, a Ray cluster's workers), each labelled with its owner's pid and host. A
container is the benchmark's own when that owner is the benchmark or a process descended from it,
asked of /proc as the create event arrives (its owner is alive then: it waits for the container);
every other container created during the run is counted, another run of the benchmark's included.
"""

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

from nanocode.sandbox import container as lifecycle
from nanocode.sandbox import engine

HOPS = 64  # parents followed before giving up


class Others:
    """Follows the engine's create events from `start()` until `stop()`, which returns the names of
    the containers created by others meanwhile."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.client: Any = None
        self.stream: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> "Others":
        """Starts following; an engine that cannot be followed leaves the count at none."""
        try:
            self.client = engine.connect(timeout=30)  # a connection of its own: the stream holds it
            self.stream = self.client.events(filters={"type": "container", "event": "create"}, decode=True)
        except Exception:
            return self
        self.thread = threading.Thread(target=self._follow, name="bench-others", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> list[str]:
        for opened in (self.stream, self.client):
            if opened is not None:
                with contextlib.suppress(Exception):
                    opened.close()
        if self.thread is not None:
            self.thread.join(5)
        return list(self.names)

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed by stop(), or the engine gone
            for event in self.stream:
                attributes = event.get("Actor", {}).get("Attributes", {})
                if not _ours(attributes):
                    self.names.append(str(attributes.get("name", "?")))


def _ours(labels: dict[str, str]) -> bool:
    if labels.get(f"{lifecycle.LABEL}.owner.host") != socket.gethostname():
        return False
    owner = labels.get(f"{lifecycle.LABEL}.owner.pid", "")
    return owner.isdigit() and descends(int(owner), os.getpid())


def descends(pid: int, ancestor: int) -> bool:
    """Whether `pid` is `ancestor` or a process below it, as /proc has them now."""
    for _ in range(HOPS):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # after the command's name, which may hold ")"
    return False
