"""Bind mode's promise: the project is shared live, and no repository the host's git reads can be
planted or changed.

Repositories are found the way git finds them (`gitdirs`): every `.git` (a folder, a gitfile, a
link), and every folder that passes git's own test of a git directory, whatever its name. Those in
the project at the start are read-only inside, as a whole. When the goal ends, one that is new or
not what it was is moved aside, under a fresh name the sandbox could not know: a `.git` whole; a
folder that became a repository loses what makes it one (its `HEAD` and the repository files that
were not there at the start), moved together into a quarantine folder inside it.
"""

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import Mount

from nanocode.errors import NanocodeError
from nanocode.workspace import gitdirs
from nanocode.workspace.trees import HandleTree, join

EXIT_WORKSPACE = 6
QUARANTINE = ".nanocode-quarantine-"
FINGERPRINTED = ("HEAD", "config", "config.worktree", "commondir", "gitdir", "packed-refs")


class QuarantineFailed(NanocodeError):
    """A repository the sandbox made could not be moved aside: the user must look before using git there."""

    exit_code = EXIT_WORKSPACE


@dataclass
class Snapshot:
    """The project's repositories: `.git`s by their path, folders by their path and a "/", each with
    what it is; and the paths named as a repository's own (`gitdirs.REPO_OWN`)."""

    gits: dict[str, str] = field(default_factory=dict)
    owned: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {"gits": self.gits, "owned": self.owned}

    @classmethod
    def of(cls, entry: dict[str, Any]) -> "Snapshot":
        return cls(dict(entry.get("gits") or {}), list(entry.get("owned") or []))


def snapshot(project: str) -> Snapshot:
    """What the project's repositories are; found and read through folder handles, never through a
    symlink (`gitdirs.find`, `HandleTree`)."""
    found = gitdirs.find(project)
    if not (found.dot_gits or found.folders):
        return Snapshot({}, found.owned)
    with HandleTree(project) as tree:
        gits = {rel: _what(tree, rel) for rel in found.dot_gits}
        gits |= {_key(rel): _fingerprint(tree, rel) for rel in found.folders}
    return Snapshot(gits, found.owned)


def find_gits(project: str) -> dict[str, str]:
    return snapshot(project).gits


def _key(folder: str) -> str:
    return f"{folder or '.'}/"


def _folder(key: str) -> str:
    return "" if key == "./" else key[:-1]


def _what(tree: HandleTree, path: str) -> str:
    """What a `.git` is; read never through a symlink nor from a FIFO the sandbox made (that would
    block the end of the goal for ever)."""
    try:
        with tree.handles.at(path) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return "link:" + os.readlink(name, dir_fd=fd)
    except OSError:
        return "gone"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    data = tree.read(path, 4096)
    return "file:" + data.decode("utf-8", "replace") if data is not None else f"other:{stat.S_IFMT(st.st_mode):o}"


def _fingerprint(tree: HandleTree, folder: str) -> str:
    """What a repository folder is: which of its own files it has, and what its small ones say."""
    h = hashlib.sha256()
    for name in sorted(gitdirs.REPO_OWN):
        node = tree.lstat(join(folder, name))
        if node is not None:
            h.update(f"{name}\0{node.kind}\0{node.target}\0".encode())
            if name in FINGERPRINTED:
                h.update(tree.read(join(folder, name), 1 << 16) or b"")
    return "repo:" + h.hexdigest()


def read_only_mounts(project: str, gits: dict[str, str]) -> list[Mount]:
    """Each repository read-only as a whole (index included); at the project's top, its own files."""
    mounts = []
    for key, what in sorted(gits.items()):
        for path in _protected(project, key, what):
            mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    return mounts


def _protected(project: str, key: str, what: str) -> list[str]:
    if key == "./":
        names = sorted(gitdirs.REPO_OWN)
        return [p for p in (os.path.join(project, n) for n in names) if os.path.lexists(p) and not os.path.islink(p)]
    path = os.path.join(project, _folder(key) if key.endswith("/") else key)
    if what.startswith("link:"):
        # A link to a git folder elsewhere in the project: that folder is the one to protect.
        path = os.path.realpath(path)
        if not (path.startswith(project + os.sep) and os.path.exists(path)):
            return []
    return [path]


def planted(project: str, before: Snapshot) -> list[str]:
    """The repositories that are new, or not what they were (keys of `Snapshot.gits`), deepest first."""
    now = snapshot(project).gits
    changed = [key for key, what in now.items() if before.gits.get(key) != what]
    return sorted(changed, key=lambda key: (-_depth(key), key))


def _depth(key: str) -> int:
    path = _folder(key) if key.endswith("/") else key
    return len(path.split("/")) if path else 0


def quarantine(project: str, keys: list[str], before: Snapshot) -> list[tuple[str, str]]:
    """Moves each aside; returns (what it was, where it went); raises QuarantineFailed."""
    moved = []
    for key in keys:
        if key.endswith("/"):
            moved += _defuse(project, key, before)
        elif os.path.lexists(os.path.join(project, key)):
            path = os.path.join(project, key)
            moved.append((path, _move_beside(path)))
    return moved


def _move_beside(path: str) -> str:
    target = f"{path}{QUARANTINE}{secrets.token_hex(8)}"
    _rename(path, target, path)
    _disarm(target, path)
    return target


def _defuse(project: str, key: str, before: Snapshot) -> list[tuple[str, str]]:
    """A folder that became (or changed as) a repository: what makes it one goes into a fresh
    quarantine folder inside it."""
    rel = _folder(key)
    folder = os.path.join(project, rel) if rel else project
    owned = set(before.owned)
    present = [n for n in sorted(gitdirs.REPO_OWN) if os.path.lexists(os.path.join(folder, n))]
    names = [n for n in present if join(rel, n) not in owned]
    if ("HEAD" in present and "HEAD" not in names) and (key not in before.gits or not names):
        names.insert(0, "HEAD")
    if not names:
        return []
    target = os.path.join(folder, f"{QUARANTINE}{secrets.token_hex(8)}")
    label = f"{folder} a git repository ({', '.join(names)})"
    try:
        _writable(Path(folder))
        os.mkdir(target, 0o700)
    except OSError as exc:
        raise _failed(label, exc) from None
    for name in names:
        _rename(os.path.join(folder, name), os.path.join(target, name), label)
    _disarm(target, label)
    return [(label, target)]


def _disarm(target: str, label: str) -> None:
    """What is moved aside is no repository either: git's test needs a HEAD, and it gets another name."""
    head = os.path.join(target, "HEAD")
    if os.path.isdir(target) and not os.path.islink(target) and os.path.lexists(head):
        _rename(head, head + QUARANTINE.rstrip("-"), label)


def _rename(path: str, target: str, label: str) -> None:
    try:
        _writable(Path(path).parent)
        os.rename(path, target)
    except OSError as exc:
        raise _failed(label, exc) from None


def _writable(parent: Path) -> None:
    if not os.access(parent, os.W_OK) and parent.stat().st_uid == os.getuid():
        parent.chmod(parent.stat().st_mode | 0o700)  # the sandbox, as the user, may have locked it


def _failed(label: str, exc: OSError) -> QuarantineFailed:
    return QuarantineFailed(
        f"the sandbox made {label}, which host git would read, and it could not be moved aside "
        f"({exc.strerror}): remove it before running git there"
    )
