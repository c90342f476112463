"""Applying a goal's change set to its project: all of it or, on a conflict, nothing."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from nanocode.batch.workspace import Change, digest_or_none
from nanocode.errors import NanocodeError


class Conflict(NanocodeError):
    """A file the change set touches was changed in the project since the goal started."""

    exit_code = 6


def load(folder: Path) -> list[Change]:
    return [Change(**entry) for entry in json.loads((folder / "changes.json").read_text())]


def apply(folder: Path, project: Path) -> int:
    """Applies the change set kept in `folder`; raises Conflict (having changed nothing) on a conflict."""
    changes = load(folder)
    for change in changes:
        _inside(project, change.path)
    conflicts = [c.path for c in changes if digest_or_none(project / c.path) != c.base]
    if conflicts:
        raise Conflict(f"changed in {project} since the goal started: {', '.join(conflicts[:10])}")
    for change in changes:
        _apply_one(folder, project, change)
    return len(changes)


def _apply_one(folder: Path, project: Path, change: Change) -> None:
    target = project / change.path
    if change.change == "deleted":
        target.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed over it: a reader never sees half a file.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".nanocode-")
    os.close(fd)
    try:
        if change.link is not None:
            os.unlink(temporary)
            os.symlink(change.link, temporary)
        else:
            shutil.copyfile(folder / "files" / change.path, temporary)
            os.chmod(temporary, change.mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _inside(project: Path, path: str) -> None:
    """A change set names paths inside its project, through no symlink."""
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or not parts or ".git" in parts:
        raise Conflict(f"the change set names a path nanocode will not write: {path}")
    here = project
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise Conflict(f"the change set writes through a symlink in the project: {path}")
