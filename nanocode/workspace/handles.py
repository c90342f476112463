"""Folder handles: a tree of files reached only through folders opened one name at a time, none of
them followed if it is a symlink.

Whatever a path string names, `Tree` opens its folders from the top down with O_NOFOLLOW and
O_DIRECTORY, and makes the last step relative to the handle it got: a symlink anywhere on the
way stops the operation with `Beyond`, so nothing reached through one is ever read or changed.

`walk` goes down a whole tree the same way: each folder is opened through the handle of the folder
that holds it (O_NOFOLLOW, O_DIRECTORY), and listed from its own handle. No path string is resolved
again, so no symlink, old or new, leads a walk out of the tree or round it twice. However deep the
tree, a walk holds a bounded number of handles (a folder it let go is reopened from one it holds,
name by name, and must be the very folder it was), so no subtree is left out for want of handles;
and a folder it cannot check for any other reason than being gone is told to the caller, never
skipped in silence.
"""

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
Failed = Callable[[str, OSError], None]  # told of each folder a walk could not check, and why

HELD = 64  # folder handles a walk holds at most, whatever the depth: the rest are reopened when needed
GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # gone since listed, or no longer a folder: nothing to walk


@dataclass
class _Level:
    """A folder on the way down: its path, its name, its identity, the folders in it still to enter,
    and its handle while it holds one."""

    path: str
    name: str
    ident: tuple[int, int]
    inner: list[str]
    fd: int | None


class _Chain:
    """The folders from the top down to the one being walked. Only the top and the deepest `HELD`
    hold a handle; one that lost its handle is reopened from the nearest that holds one, name by
    name with O_NOFOLLOW and O_DIRECTORY, and must be the very folder it was (device and inode)."""

    def __init__(self, top: int):
        self.levels = [_Level("", "", _ident(top), [], top)]

    def push(self, level: _Level) -> None:
        self.levels.append(level)
        self._trim()

    def _trim(self) -> None:
        """Lets go of the shallowest handles but the top's beyond `HELD`: those held are always the
        deepest, so going back up reopens a level only every `HELD` levels."""
        held = [lv for lv in self.levels[1:] if lv.fd is not None]
        for lv in held[: max(0, len(held) - HELD)]:
            self._drop(lv)

    def pop(self) -> None:
        self._drop(self.levels.pop())

    def handle(self) -> int:
        """The deepest folder's handle, reopened when it had to let it go; `_Lost` when it cannot be."""
        held = max(i for i, lv in enumerate(self.levels) if lv.fd is not None)
        for i in range(held + 1, len(self.levels)):
            level, parent = self.levels[i], self.levels[i - 1]
            assert parent.fd is not None
            try:
                level.fd = _reopen(parent.fd, level)
            except OSError as exc:
                raise _Lost(i, exc) from None
            self._trim()
        fd = self.levels[-1].fd
        assert fd is not None
        return fd

    def cut(self, index: int) -> None:
        """Leaves the folder at `index`, and all below it, unwalked."""
        while len(self.levels) > index:
            self.pop()

    def close(self) -> None:
        self.cut(0)

    @staticmethod
    def _drop(level: _Level) -> None:
        if level.fd is not None:
            os.close(level.fd)
            level.fd = None


class _Lost(Exception):
    def __init__(self, index: int, error: OSError):
        self.index = index
        self.error = error


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _reopen(parent: int, level: _Level) -> int:
    fd = os.open(level.name, FOLDER, dir_fd=parent)
    if _ident(fd) != level.ident:
        os.close(fd)
        raise OSError(errno.ESTALE, "it was replaced while it was walked", level.path)
    return fd


Enter = Callable[[str, os.DirEntry[str]], bool]  # a folder's path below the top and its entry: walk it?


def walk(root: str, enter: Enter, failed: Failed, unlock: float | None = None) -> Iterator[Listed]:
    """Every folder below `root` and `root` itself, depth first, with its entries (asked of its
    handle: `entry.stat(follow_symlinks=False)` is too). A folder is entered when `enter(path, entry)`
    says so (its path below `root`, its entry), never through a symlink. However deep the tree, at most `HELD + 1`
    handles are open (`_Chain`). A folder that cannot be opened or listed is told to `failed`, unless
    it is gone or no longer a folder (then there is nothing in it to walk). A folder closed to the user
    is opened to them only if it changed at `unlock` or later (the goal's start: the goal locked it)."""
    try:
        chain = _Chain(os.open(root, FOLDER))
    except OSError as exc:
        _tell(failed, "", exc)
        return
    try:
        try:
            entries = _listed(chain.handle())
        except OSError as exc:
            _tell(failed, "", exc)
            return
        yield "", entries
        chain.levels[0].inner = _inner("", entries, enter)
        while chain.levels:
            yield from _step(chain, enter, failed, unlock)
    finally:
        chain.close()


def _step(chain: _Chain, enter: Enter, failed: Failed, unlock: float | None) -> Iterator[Listed]:
    """Enters the next folder of the deepest level, or leaves that level when it has none left."""
    level = chain.levels[-1]
    if not level.inner:
        chain.pop()
        return
    name = level.inner.pop()
    path = f"{level.path}/{name}" if level.path else name
    try:
        parent = chain.handle()
    except _Lost as lost:
        _tell(failed, chain.levels[lost.index].path, lost.error)
        chain.cut(lost.index)
        return
    try:
        fd = _open_in(parent, name, unlock)
    except OSError as exc:
        _tell(failed, path, exc)
        return
    chain.push(_Level(path, name, _ident(fd), [], fd))
    try:
        entries = _listed(fd)
    except OSError as exc:
        _tell(failed, path, exc)
        return
    yield path, entries
    chain.levels[-1].inner = _inner(path, entries, enter)


def _tell(failed: Failed, path: str, exc: OSError) -> None:
    if exc.errno not in GONE:
        failed(path, exc)


def _listed(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as items:
        return list(items)


def _inner(folder: str, entries: list[os.DirEntry[str]], enter: Enter) -> list[str]:
    """The folders among `entries` to enter, by name (a symlink is no folder here)."""
    return [
        item.name
        for item in entries
        if _is_folder(item) and enter(f"{folder}/{item.name}" if folder else item.name, item)
    ]


def _is_folder(item: os.DirEntry[str]) -> bool:
    try:
        return item.is_dir(follow_symlinks=False)
    except OSError:  # gone since it was listed
        return False


def open_folder(fd: int, name: str, unlock: float | None) -> int | None:
    """A handle on the folder `name` in `fd`, never through a symlink; None when it cannot be had."""
    try:
        return _open_in(fd, name, unlock)
    except OSError:
        return None


def _open_in(fd: int, name: str, unlock: float | None) -> int:
    """A handle on the folder `name` in `fd`, never through a symlink. One the goal locked (the sandbox
    runs as the user, whose folder it is: changed at `unlock`, the goal's start, or later) is opened to
    the user first, so that nothing it holds is hidden from a walk; one the user locked stays locked."""
    try:
        return os.open(name, FOLDER, dir_fd=fd)
    except PermissionError:
        if unlock is None:
            raise
    held = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        st = os.fstat(held)
        if st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode) or st.st_ctime < unlock:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        that = f"/proc/self/fd/{held}"  # the very folder opened above, whatever its name is now
        os.chmod(that, stat.S_IMODE(st.st_mode) | 0o700)
        return os.open(that, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(held)
