"""Bind mode's promise: the project is shared live, and no repository the host's git reads can be
planted or changed.

Repositories are found the way git finds them (`gitdirs`): every `.git` (a folder, a gitfile, a
link), and every folder that passes git's own test of a git directory, whatever its name. Those in
the project at the start are read-only inside, as a whole. When the goal ends, one that is new or
not what it was is moved aside, under a fresh name the sandbox could not know: a `.git` whole; a
folder that became a repository loses what makes it one (its `HEAD` and the repository files that
were not there at the start), moved together into a quarantine folder inside it. Every read and
move is made relative to folder handles, never through a symlink (`handles.Tree`).
"""

import errno
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
from nanocode.workspace.handles import FOLDER, Tree, open_folder
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
    where: str = ""  # this boot and the project folder (`_where`): the folders' identities hold within both

    def fields(self) -> dict[str, Any]:
        return {"gits": self.gits, "owned": self.owned, "where": self.where}

    @classmethod
    def of(cls, entry: dict[str, Any]) -> "Snapshot":
        return cls(dict(entry.get("gits") or {}), list(entry.get("owned") or []), str(entry.get("where") or ""))


def snapshot(project: str, unlock: float | None = None) -> Snapshot:
    """What the project's repositories are; found and read through folder handles, never through a
    symlink (`gitdirs.find`, `HandleTree`)."""
    found = gitdirs.find(project, unlock)
    if not (found.dot_gits or found.folders):
        return Snapshot({}, found.owned, _where(project))
    with HandleTree(project) as tree:
        gits = {rel: _what(tree, rel) for rel in found.dot_gits}
        gits |= {_key(rel): _fingerprint(tree, rel) for rel in found.folders}
    return Snapshot(gits, found.owned, _where(project))


def _where(project: str) -> str:
    """This boot, and which folder the project is: a device number may change with a reboot, and a
    project removed and cloned again is another folder, whose repositories are not new for that."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        folder = os.stat(project)
    except OSError:
        return ""
    return f"{boot}@{folder.st_dev}:{folder.st_ino}"


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
        return f"dir{_identity(st)}"
    data = tree.read(path, 4096)
    return "file:" + data.decode("utf-8", "replace") if data is not None else f"other:{stat.S_IFMT(st.st_mode):o}"


def _identity(st: os.stat_result) -> str:
    """Which folder it is: the sandbox can rename the folder holding a repository (the read-only mount
    goes with it) and make another of that path, which must not pass for the user's."""
    return f"@{st.st_dev}:{st.st_ino}"


def _same(before: str, now: str, strict: bool = True) -> bool:
    """Whether a repository is what it was; compared without the folders' identities where they may
    not hold (`strict` False: another boot, the project cloned again) or were not recorded (a journal
    written by an older nanocode), rather than every repository taken for planted."""
    if not strict or "@" not in before:
        return _plain(before) == _plain(now)
    return before == now


def _plain(what: str) -> str:
    return what.split("@", 1)[0] if what.startswith(("dir@", "repo:")) else what


def _fingerprint(tree: HandleTree, folder: str) -> str:
    """What a repository folder is: which folder, which of its own files it has, and what its small
    ones say."""
    h = hashlib.sha256()
    for name in sorted(gitdirs.REPO_OWN):
        node = tree.lstat(join(folder, name))
        if node is not None:
            h.update(f"{name}\0{node.kind}\0{node.target}\0".encode())
            if name in FINGERPRINTED:
                h.update(tree.read(join(folder, name), 1 << 16) or b"")
    return "repo:" + h.hexdigest() + _folder_identity(tree, folder)


def _folder_identity(tree: HandleTree, folder: str) -> str:
    if not folder:
        return _identity(os.fstat(tree.handles.fd))
    try:
        with tree.handles.at(folder) as (fd, name):
            return _identity(os.stat(name, dir_fd=fd, follow_symlinks=False))
    except OSError:
        return "@gone"


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


def planted(project: str, before: Snapshot, since: float | None = None) -> list[str]:
    """The repositories that are new, or not what they were (keys of `Snapshot.gits`), deepest first;
    found with the folders the goal locked (changed at `since` or later) opened to the user."""
    now = snapshot(project, since)
    strict = bool(before.where) and before.where == now.where
    changed = [
        key for key, what in now.gits.items() if key not in before.gits or not _same(before.gits[key], what, strict)
    ]
    # One of the user's, at another path: the goal renamed a folder above it (its read-only mount went
    # along). Told by its identity, which no folder made anew has, so it stays where the goal put it.
    theirs = {what for what in before.gits.values() if strict and _identified(what)}
    return sorted((key for key in changed if now.gits[key] not in theirs), key=lambda key: (-_depth(key), key))


def _identified(what: str) -> bool:
    return what.startswith(("dir@", "repo:")) and "@" in what


def _depth(key: str) -> int:
    path = _folder(key) if key.endswith("/") else key
    return len(path.split("/")) if path else 0


def quarantine(project: str, keys: list[str], before: Snapshot) -> list[tuple[str, str]]:
    """Moves each aside; returns (what it was, where it went); raises QuarantineFailed.

    Every step is taken relative to a folder handle opened from the project's, one name at a time,
    never through a symlink (`handles.Tree`): a folder on the way swapped for one (by the sandbox of
    another goal still running in the project) stops the move rather than lead it out of the project."""
    moved: list[tuple[str, str]] = []
    if not keys:
        return moved
    with Tree(project) as tree:
        for key in keys:
            moved += _defuse(tree, key, before) if key.endswith("/") else _move_beside(tree, key)
    return moved


def _move_beside(tree: Tree, key: str) -> list[tuple[str, str]]:
    path = os.path.join(tree.root, key)
    try:
        with tree.at(key) as (fd, name):
            if not _lexists(fd, name):
                return []
            target = f"{name}{QUARANTINE}{secrets.token_hex(8)}"
            _writable(fd)
            os.rename(name, target, src_dir_fd=fd, dst_dir_fd=fd)
            _disarm(fd, target)
    except FileNotFoundError:
        return []  # gone, with a folder on the way
    except OSError as exc:
        raise _failed(path, exc) from None
    return [(path, f"{path}{target[len(name) :]}")]


def _defuse(tree: Tree, key: str, before: Snapshot) -> list[tuple[str, str]]:
    """A folder that became (or changed as) a repository: what makes it one goes into a fresh
    quarantine folder inside it."""
    rel = _folder(key)
    folder = os.path.join(tree.root, rel) if rel else tree.root
    try:
        fd = tree.folder(rel)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _failed(f"{folder} a git repository", exc) from None
    try:
        return _defuse_in(fd, folder, key, before)
    finally:
        os.close(fd)


def _defuse_in(fd: int, folder: str, key: str, before: Snapshot) -> list[tuple[str, str]]:
    rel = _folder(key)
    owned = set(before.owned)
    present = [n for n in sorted(gitdirs.REPO_OWN) if _lexists(fd, n)]
    names = [n for n in present if join(rel, n) not in owned]
    if ("HEAD" in present and "HEAD" not in names) and (key not in before.gits or not names):
        names.insert(0, "HEAD")
    if not names:
        return []
    target = f"{QUARANTINE}{secrets.token_hex(8)}"
    label = f"{folder} a git repository ({', '.join(names)})"
    try:
        _writable(fd)
        os.mkdir(target, 0o700, dir_fd=fd)
        inside = os.open(target, FOLDER, dir_fd=fd)
        try:
            for name in names:
                os.rename(name, name, src_dir_fd=fd, dst_dir_fd=inside)
        finally:
            os.close(inside)
        _disarm(fd, target)
    except OSError as exc:
        raise _failed(label, exc) from None
    return [(label, os.path.join(folder, target))]


def _disarm(fd: int, target: str) -> None:
    """What is moved aside is no repository either: git's test needs a HEAD, and it gets another name.
    `target`, in the folder `fd`, is entered only if it is a folder itself, not a symlink to one."""
    if not stat.S_ISDIR(os.stat(target, dir_fd=fd, follow_symlinks=False).st_mode):
        return
    inside = open_folder(fd, target, 0.0)  # moved aside as the goal's: one it locked is opened to the user
    if inside is None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)
    try:
        if _lexists(inside, "HEAD"):
            _writable(inside)
            os.rename("HEAD", "HEAD" + QUARANTINE.rstrip("-"), src_dir_fd=inside, dst_dir_fd=inside)
    finally:
        os.close(inside)


def _lexists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _writable(fd: int) -> None:
    """The folder `fd`, opened to the user when the sandbox (as them) locked it."""
    st = os.fstat(fd)
    if not os.access(".", os.W_OK, dir_fd=fd) and st.st_uid == os.getuid():
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)


def _failed(label: str, exc: OSError) -> QuarantineFailed:
    return QuarantineFailed(
        f"the sandbox made {label}, which host git would read, and it could not be moved aside "
        f"({exc.strerror}): remove it before running git there"
    )
