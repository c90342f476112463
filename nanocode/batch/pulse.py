"""What the submitting machine knows of a Ray cluster's nodes, asked of the cluster's GCS by a thread
of its own. Ray's calls to a GCS that is gone block (and Ray ends the process after 60 s of it), so
the batch's loop never makes them: it reads the last answer, and a GCS silent for `SILENT` seconds is
a cluster gone."""

import threading
import time
from typing import Any

SILENT = 30.0  # seconds without an answer from the GCS: the cluster is taken for gone, well before Ray's 60 s
ASK = 2.0  # seconds between questions


class Pulse:
    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.answered = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._ask, name="nanocode-ray-pulse", daemon=True)

    def start(self) -> "Pulse":
        """Asks once, here, then every `ASK` seconds from the thread."""
        self._answer()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def gone(self) -> bool:
        return time.monotonic() - self.answered > SILENT

    def _ask(self) -> None:
        while not self._stopped.wait(ASK):
            self._answer()

    def _answer(self) -> None:
        import ray

        try:
            nodes = ray.nodes()  # type: ignore[no-untyped-call]
        except Exception:  # over Ray Client, a head that went away; the silence says it
            return
        self.nodes, self.answered = nodes, time.monotonic()
