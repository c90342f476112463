"""What went through the egress proxy: each connection as the proxy told it, and the sum of a goal."""

import threading
from typing import Any

from nanocode.interfaces import Recorder

# A connection as the proxy tells it: only these fields, of these types, reach the transcript.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "address": str,
    "method": str,
    "allowed": bool,
    "rule": str,
    "when": str,
    "seconds": (int, float),
    "sent": int,
    "received": int,
    "error": str,
}


class Audit:
    """Records each connection in the transcript as it is told, and sums them up at the end."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.connections: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, told: Any) -> None:
        if not isinstance(told, dict):
            return
        record = {k: v for k, v in told.items() if k in FIELDS and isinstance(v, FIELDS[k])}
        record = {k: v[:300] if isinstance(v, str) else v for k, v in record.items()}
        with self._lock:
            self.connections.append(record)
        self.recorder.record("network", **record)

    def summary(self) -> str:
        with self._lock:
            connections = list(self.connections)
        if not connections:
            return "network: no connections"
        allowed = [c for c in connections if c.get("allowed")]
        hosts = {c.get("host") for c in allowed}
        refused = sorted({str(c.get("host") or "?") for c in connections if not c.get("allowed")})
        line = f"network: {len(allowed)} connection{_s(allowed)} to {len(hosts)} host{_s(hosts)} allowed, "
        count = len(connections) - len(allowed)
        return line + (f"{count} refused: {', '.join(refused)}" if count else "none refused")


def _s(items: Any) -> str:
    return "" if len(items) == 1 else "s"
