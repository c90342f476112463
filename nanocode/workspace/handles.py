"""Folder handles: a tree of files reached only through folders opened one name at a time, none of
them followed if it is a symlink.

Whatever a path string names, `Tree` opens its folders from the top down with O_NOFOLLOW and
O_DIRECTORY, and makes the last step relative to the handle it got: a symlink anywhere on the
way stops the operation with `Beyond`, so nothing reached through one is ever read or changed.

`walk` goes down a whole tree the same way: each folder is opened through the handle of the folder
that holds it (O_NOFOLLOW, O_DIRECTORY), and listed from its own handle. No path string is resolved
again, so no symlink, old or new, leads a walk out of the tree or round it twice.
"""

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator

FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Beyond(OSError):
    """A folder on the way is a symlink, or not a folder: the path cannot be reached without following one."""

    def __init__(self, path: str, why: str):
        super().__init__(errno.ELOOP, why, path)
        self.path = path
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def names(path: str) -> list[str]:
    return [n for n in path.split("/") if n]


class Tree:
    """A folder opened once; every operation names a path relative to it."""

    def __init__(self, root: str):
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def folder(self, path: str) -> int:
        """A handle on the folder `path` (the caller closes it); `Beyond` if one on the way is not a folder."""
        fd = os.dup(self.fd)
        done: list[str] = []
        for name in names(path):
            done.append(name)
            try:
                step = os.open(name, FOLDER, dir_fd=fd)
            except OSError as exc:
                why = _why(fd, name) if exc.errno in (errno.ELOOP, errno.ENOTDIR) else ""
                os.close(fd)
                if why:
                    raise Beyond("/".join(done), why) from None
                raise
            os.close(fd)
            fd = step
        return fd

    @contextlib.contextmanager
    def at(self, path: str) -> Iterator[tuple[int, str]]:
        """The handle on `path`'s folder and its last name."""
        *parents, last = names(path)
        fd = self.folder("/".join(parents))
        try:
            yield fd, last
        finally:
            os.close(fd)

    def lstat(self, path: str) -> os.stat_result | None:
        """The path's own status (a symlink's, not its target's); None when it does not exist."""
        try:
            with self.at(path) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def blocked(self, path: str) -> str:
        """The first folder on the way to `path` that exists and is not a folder ("" when there is none)."""
        fd = os.dup(self.fd)
        try:
            done: list[str] = []
            for name in names(path)[:-1]:
                done.append(name)
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return ""
                if not stat.S_ISDIR(st.st_mode):
                    return "/".join(done)
                step = os.open(name, FOLDER, dir_fd=fd)
                os.close(fd)
                fd = step
            return ""
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[int]:
        """A handle on the regular file `path` itself; `Beyond` when it is a symlink or anything else."""
        with self.at(path) as (folder, name):
            try:
                fd = os.open(name, FILE, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Beyond(path, "is a symlink") from None
                raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Beyond(path, "is not a regular file")
            yield fd
        finally:
            os.close(fd)


def _why(folder: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return "is not a folder"
    return "is a symlink" if stat.S_ISLNK(st.st_mode) else "is not a folder"


Listed = tuple[str, list[os.DirEntry[str]]]  # a folder's path below the top ("" for it), its entries


def walk(root: str, enter: Callable[[str], bool]) -> Iterator[Listed]:
    """Every folder below `root` and `root` itself, depth first, with its entries (asked of its
    handle: `entry.stat(follow_symlinks=False)` is too). A folder is entered when `enter(name)`
    says so, never through a symlink; one that cannot be opened is left out."""
    try:
        top = os.open(root, FOLDER)
    except OSError:
        return
    # A handle open for each folder on the way down only: (handle, path, folders still to enter).
    stack: list[tuple[int, str, list[str]]] = [(top, "", [])]
    try:
        entries = _entries(top)
        yield "", entries
        stack[-1] = (top, "", _inner(entries, enter))
        while stack:
            fd, folder, inner = stack[-1]
            if not inner:
                os.close(fd)
                stack.pop()
                continue
            name = inner.pop()
            handle = open_folder(fd, name)
            if handle is not None:
                path = f"{folder}/{name}" if folder else name
                stack.append((handle, path, []))
                entries = _entries(handle)
                yield path, entries
                stack[-1] = (handle, path, _inner(entries, enter))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _entries(fd: int) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(fd) as items:
            return list(items)
    except OSError:
        return []


def _inner(entries: list[os.DirEntry[str]], enter: Callable[[str], bool]) -> list[str]:
    """The folders among `entries` to enter, by name (a symlink is no folder here)."""
    return [item.name for item in entries if _is_folder(item) and enter(item.name)]


def _is_folder(item: os.DirEntry[str]) -> bool:
    try:
        return item.is_dir(follow_symlinks=False)
    except OSError:  # gone since it was listed
        return False


def open_folder(fd: int, name: str) -> int | None:
    """A handle on the folder `name` in `fd`, never through a symlink; None when it cannot be had.
    One the sandbox locked (it runs as the user, whose folder it is) is opened to the user first, so
    that nothing it holds is hidden from a walk."""
    try:
        return os.open(name, FOLDER, dir_fd=fd)
    except PermissionError:
        pass
    except OSError:
        return None
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
            return None
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=fd)  # a folder, seen through no symlink
        return os.open(name, FOLDER, dir_fd=fd)
    except OSError:
        return None
