"""The goal's `.git` as its layer holds it, read through folder handles and never through a symlink.

What the goal wrote under `.git` is in the upper folder; only objects and the start branch's ref are
read, and only as regular files reached through real folders. A `.git` that is not a folder, a folder
the goal made anew (opaque: the repository was deleted and made again), or a symlink anywhere under
it means the goal replaced its repository: nothing of it is read (`Replaced`).
"""

import collections
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from nanocode.workspace.handles import FILE, FOLDER, Beyond, Tree

CHUNK = 1 << 20
LIMIT = 1 << 16  # a ref file, or packed-refs, larger than this is not one git wrote


class Upper(Protocol):
    root: str

    def is_opaque(self, path: str) -> bool: ...


class Replaced(Exception):
    """The goal replaced its repository: why, in words for the user."""


def _kind(tree: Tree, path: str) -> int | None:
    try:
        st = tree.lstat(path)
    except Beyond as exc:
        raise Replaced(f"{exc.path} {exc.why}") from None
    return None if st is None else stat.S_IFMT(st.st_mode)


class GitLayer:
    """The upper folder's `.git`; `present` is False when the goal wrote nothing under it."""

    def __init__(self, upper: Upper):
        self.upper = upper
        self.tree = Tree(upper.root)
        kind = _kind(self.tree, ".git")
        self.present = kind is not None
        if kind is not None and kind != stat.S_IFDIR:
            self.close()
            raise Replaced(".git is no longer a folder" if kind != stat.S_IFLNK else ".git is a symlink")
        if self.present and upper.is_opaque(os.path.join(upper.root, ".git")):
            self.close()
            raise Replaced(".git was deleted and made again")
        if self.present:
            self._no_symlinks()

    def _no_symlinks(self) -> None:
        top = self.tree.folder(".git")
        try:
            collections.deque(_walk(top, ".git"), maxlen=0)  # raises at the first symlink
        except BaseException:
            self.close()
            raise
        finally:
            os.close(top)

    def close(self) -> None:
        self.tree.close()

    def __enter__(self) -> "GitLayer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, path: str) -> str | None:
        """A small regular file under .git, as text; None when the layer does not hold it."""
        kind = _kind(self.tree, f".git/{path}")
        if kind is None or kind == stat.S_IFCHR:  # a whiteout: deleted by the goal
            return None
        if kind != stat.S_IFREG:
            raise Replaced(f".git/{path} is not a regular file")
        with self.tree.open_file(f".git/{path}") as fd:
            return os.read(fd, LIMIT).decode("utf-8", "replace")

    def copy_objects(self, target: Path) -> None:
        """Copies every object file the goal wrote into `target` (an objects folder); `info` is skipped
        (alternates would send git elsewhere)."""
        kind = _kind(self.tree, ".git/objects")
        if kind is None:
            return
        if kind != stat.S_IFDIR:
            raise Replaced(".git/objects is not a folder")
        top = self.tree.folder(".git/objects")
        try:
            _copy_folder(top, target, ".git/objects", skip=("info",))
        finally:
            os.close(top)


def _walk(folder: int, where: str, skip: tuple[str, ...] = ()) -> Iterator[tuple[int, str, os.stat_result, str]]:
    """Every entry under `folder`, a folder before what it holds: the handle of the folder it is in, its
    name, its lstat and its path from `where`. Only real folders are entered: Replaced at the first
    symlink. `skip`: names left out at the top."""
    for entry in sorted(os.listdir(folder)):
        if entry in skip:
            continue
        st = os.stat(entry, dir_fd=folder, follow_symlinks=False)
        path = f"{where}/{entry}"
        if stat.S_ISLNK(st.st_mode):
            raise Replaced(f"{path} is a symlink")
        yield folder, entry, st, path
        if stat.S_ISDIR(st.st_mode):
            inner = os.open(entry, FOLDER, dir_fd=folder)
            try:
                yield from _walk(inner, path)
            finally:
                os.close(inner)


def _copy_folder(folder: int, target: Path, where: str, skip: tuple[str, ...] = ()) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for inside, entry, st, path in _walk(folder, where, skip):
        copy = target / os.path.relpath(path, where)
        if stat.S_ISDIR(st.st_mode):
            copy.mkdir(exist_ok=True)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(inside, entry, copy)


def _copy_file(folder: int, name: str, target: Path) -> None:
    try:
        fd = os.open(name, FILE, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Replaced(f"{name} is a symlink") from None
        raise
    try:
        with open(target, "wb") as out:
            while chunk := os.read(fd, CHUNK):
                out.write(chunk)
    finally:
        os.close(fd)
