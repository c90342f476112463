"""A goal's start, written down before the sandbox starts, so that a nanocode killed with `kill -9`
has its clean-up finished by the next start."""

import json
import os
from pathlib import Path
from typing import Any

from nanocode.sandbox.container import process_start
from nanocode.workspace import paths


def write(goal: str, **fields: Any) -> Path:
    folder = paths.journal_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{goal}.json"
    entry = {"goal": goal, "pid": os.getpid(), "start": process_start(os.getpid()), **fields}
    temporary = path.with_suffix(".part")
    temporary.write_text(json.dumps(entry), encoding="utf-8")
    os.replace(temporary, path)
    return path


def done(path: Path) -> None:
    path.unlink(missing_ok=True)


def orphans() -> list[tuple[Path, dict[str, Any]]]:
    """The entries of goals whose nanocode is gone."""
    folder = paths.journal_folder()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not _alive(int(entry.get("pid", 0)), str(entry.get("start", ""))):
            found.append((path, entry))
    return found


def _alive(pid: int, start: str) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or process_start(pid) == start
