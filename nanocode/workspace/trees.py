"""A project's tree as something to ask questions of, without following a symlink by accident.

Two trees answer the same questions: the project on the host as it is (`HostTree`), and the project
as it would be once a change set is applied (`workspace.finaltree`). Paths are relative to the
project, `/`-separated, "" for its top. `lstat` is only ever asked of a path whose parents are real
folders in that tree; `resolve` walks component by component, as the kernel would, and says where a
path lands: inside the project (a relative path), or outside it (an absolute host path).
"""

import os
import stat
from dataclasses import dataclass
from typing import Protocol

from nanocode.workspace import handles

HEAD_LIMIT = 255  # what git reads of a HEAD
HOPS = 40  # symlinks followed before giving up, as the kernel does


@dataclass(frozen=True)
class Node:
    kind: str  # "file", "dir", "symlink", "other"
    mode: int = 0
    target: str = ""  # of a symlink


class Tree(Protocol):
    root: str  # the project's absolute path on the host

    def lstat(self, path: str) -> Node | None: ...

    def read(self, path: str, limit: int) -> bytes | None: ...


@dataclass(frozen=True)
class Place:
    """Where a path lands: `inside` the project at `path`, or outside it at the host's `path`;
    `broken` when it leads nowhere (a file on the way, or too many links)."""

    path: str
    inside: bool = True
    broken: bool = False


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def node_of(st: os.stat_result, path: str, folder: int | None = None) -> Node:
    """What `st` says of `path` (a symlink's target read from it, relative to the handle `folder`)."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return Node("symlink", mode, os.readlink(path, dir_fd=folder))
    if stat.S_ISDIR(st.st_mode):
        return Node("dir", mode)
    return Node("file" if stat.S_ISREG(st.st_mode) else "other", mode)


def read_plain(path: str, limit: int) -> bytes | None:
    """The first `limit` bytes of a regular file, never through a symlink, never blocking on a fifo."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


class HandleTree:
    """The project as it is on the host, asked through folder handles (`handles.Tree`): every folder
    on the way to a path is opened from the project's handle, one name at a time, never through a
    symlink; a path that would need one, or that names `..`, is not there."""

    def __init__(self, root: str):
        self.root = root
        self.handles = handles.Tree(root)

    def close(self) -> None:
        self.handles.close()

    def __enter__(self) -> "HandleTree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lstat(self, path: str) -> Node | None:
        if ".." in path.split("/"):
            return None
        try:
            if not handles.names(path):
                return node_of(os.fstat(self.handles.fd), "")
            with self.handles.at(path) as (fd, name):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                return node_of(st, name, fd)
        except OSError:
            return None

    def read(self, path: str, limit: int) -> bytes | None:
        if ".." in path.split("/"):
            return None
        try:
            with self.handles.open_file(path) as fd:
                return os.read(fd, limit)
        except OSError:
            return None


class HostTree:
    """The project as it is on the host."""

    def __init__(self, root: str):
        self.root = root

    def lstat(self, path: str) -> Node | None:
        full = os.path.join(self.root, path) if path else self.root
        try:
            return node_of(os.lstat(full), full)
        except OSError:
            return None

    def read(self, path: str, limit: int) -> bytes | None:
        return read_plain(os.path.join(self.root, path), limit)


def resolve(tree: Tree, path: str, follow_last: bool = True) -> Place:
    """Where `path` lands in `tree`, each symlink on the way followed in the tree itself (the last
    one too when `follow_last`)."""
    pending = [n for n in path.split("/") if n]
    done: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            if not done:
                return _outside(tree, "/".join(pending), os.path.dirname(tree.root))
            done.pop()
            continue
        here = "/".join([*done, name])
        node = tree.lstat(here)
        if node is None or node.kind != "symlink" or (not pending and not follow_last):
            if node is not None and node.kind != "dir" and pending:
                return Place(here, broken=True)  # a file on the way: the path does not exist
            done.append(name)
            continue
        hops += 1
        if hops > HOPS:
            return Place(here, broken=True)
        target = node.target
        if os.path.isabs(target):
            inside = _within(tree.root, target)
            if inside is None:
                return _outside(tree, "/".join(pending), target)
            done, pending = [], [*inside.split("/"), *pending]
        else:
            pending = [*target.split("/"), *pending]
    return Place("/".join(done))


def _within(root: str, target: str) -> str | None:
    """The part of an absolute `target` below `root`, or None when it is not below it."""
    target = os.path.normpath(target)
    if target == root:
        return ""
    if target.startswith(root.rstrip("/") + "/"):
        return target[len(root.rstrip("/")) + 1 :]
    return None


def _outside(tree: Tree, rest: str, base: str) -> Place:
    full = os.path.normpath(os.path.join(base, rest) if rest else base)
    inside = _within(tree.root, full)
    return Place(full, inside=False) if inside is None else resolve(tree, inside)
