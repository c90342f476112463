"""Bind mode's promise: the project is shared live, and no git folder the host reads can be changed.

Every `.git` (a folder, a gitfile, a link) in the project at the start, top and nested, is read-only
inside as a whole. One that appears anywhere during the goal, or a gitfile or link that changes, is
moved aside when the goal ends, under a fresh name that the sandbox could not know.
"""

import os
import secrets
from pathlib import Path

from docker.types import Mount

from nanocode.errors import NanocodeError

EXIT_WORKSPACE = 6


class QuarantineFailed(NanocodeError):
    """A `.git` the sandbox made could not be moved aside: the user must look before using git there."""

    exit_code = EXIT_WORKSPACE


def find_gits(project: str) -> dict[str, str]:
    """Every `.git` under the project (path relative to it) and what it is: "dir", or the text of a
    gitfile or the target of a link."""
    found = {}
    for folder, dirs, files in os.walk(project):
        for name in (".git",):
            path = os.path.join(folder, name)
            if name in dirs or name in files:
                found[os.path.relpath(path, project)] = _what(path)
        dirs[:] = [d for d in dirs if d != ".git"]
    return found


def _what(path: str) -> str:
    try:
        if os.path.islink(path):
            return "link:" + os.readlink(path)
        if os.path.isdir(path):
            return "dir"
        with open(path, "rb") as f:
            return "file:" + f.read(4096).decode("utf-8", "replace")
    except OSError:
        return "gone"


def read_only_mounts(project: str, gits: dict[str, str]) -> list[Mount]:
    """Each `.git` folder or gitfile, read-only as a whole (index included)."""
    mounts = []
    for relative, what in sorted(gits.items()):
        path = os.path.join(project, relative)
        if what.startswith("link:"):
            # A link to a git folder elsewhere in the project: that folder is the one to protect.
            path = os.path.realpath(path)
            if not (path.startswith(project + os.sep) and os.path.exists(path)):
                continue
        mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    return mounts


def planted(project: str, before: dict[str, str]) -> list[str]:
    """The `.git`s that are new, or not what they were."""
    now = find_gits(project)
    return [os.path.join(project, rel) for rel, what in sorted(now.items()) if before.get(rel) != what]


def quarantine(paths: list[str]) -> list[tuple[str, str]]:
    """Moves each aside to a fresh name beside it; returns (path, where it went); raises QuarantineFailed."""
    moved = []
    for path in paths:
        target = f"{path}.nanocode-quarantine-{secrets.token_hex(8)}"
        try:
            parent = Path(path).parent
            if not os.access(parent, os.W_OK) and parent.stat().st_uid == os.getuid():
                parent.chmod(parent.stat().st_mode | 0o700)  # the sandbox, as the user, may have locked it
            os.rename(path, target)
        except OSError as exc:
            raise QuarantineFailed(
                f"the sandbox made {path}, which host git would read, and it could not be moved aside "
                f"({exc.strerror}): remove it before running git there"
            ) from None
        moved.append((path, target))
    return moved
