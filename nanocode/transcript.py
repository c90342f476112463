"""The transcript: every step of a run as JSON Lines, flushed as it is written."""

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from nanocode.errors import ConfigError


def runs_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "nanocode" / "runs"


def default_path() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_folder() / f"{stamp}-{os.getpid()}.jsonl"


class Transcript:
    def __init__(self, path: Path):
        self.path = path
        self._started = time.monotonic()
        self._lock = threading.Lock()  # the egress audit records from a thread of its own
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A model can send text that is not valid Unicode (lone surrogates): kept, escaped.
            self._file: IO[str] = path.open("a", encoding="utf-8", errors="backslashreplace")
            if self._file.tell() and not _ends_a_line(path):
                self._file.write("\n")  # a run cut mid-line: what is appended starts a line of its own
        except OSError as exc:
            raise ConfigError(f"cannot write the transcript {path}: {exc.strerror}") from None

    def record(self, kind: str, **fields: Any) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "elapsed": round(time.monotonic() - self._started, 4),
            "kind": kind,
            **fields,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _ends_a_line(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
