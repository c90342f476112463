"""A bind-mode goal holds its project alone, from before its sandbox starts until its clean-up is done.

The end of a bind goal moves aside every repository that is new since its start and takes bits off
every file changed since then: with two goals writing the same project at once, the first to end
would do so to what the other is still making. So a bind goal takes the project's lease first.

Invariant: at most one lease on a project folder is held at a time, whatever name reached it. The
lease is an exclusive `flock` on a file under the state folder named by the project's device and
inode (its resolved address, never its spelling: two spellings, or a symlink to it, name one file),
and a kernel lock lives exactly as long as the open file that holds it: a nanocode killed with
`kill -9` holds nothing after it. The pid written in the file is for the message only, never trusted.
"""

import contextlib
import errno
import fcntl
import os

from nanocode import display
from nanocode.errors import ConfigError
from nanocode.workspace import paths


class ProjectBusy(ConfigError):
    """Another bind-mode goal holds the project."""


class Lease:
    """A project held: `release` (once, or again to no effect) lets the next goal take it."""

    def __init__(self, fd: int):
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # the lock goes with the last descriptor of its open file


def lock_path(project: str) -> str:
    """The lease's file: by the folder's device and inode, the symlinks on the way followed."""
    st = os.stat(project)
    return str(paths.state() / "leases" / f"project-{st.st_dev:x}-{st.st_ino:x}.lock")


def take(project: str) -> Lease | None:
    """The project's lease, or None while another goal holds it."""
    path = lock_path(project)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return Lease(fd)


def hold(project: str) -> Lease:
    """The project's lease for a bind goal; ProjectBusy (one line, exit 3) while another holds it."""
    try:
        lease = take(project)
    except OSError as exc:
        raise ConfigError(f"cannot take the lease on {display.name(project)} ({exc.strerror})") from None
    if lease is None:
        raise ProjectBusy(
            f"another bind-mode goal{_holder(project)} is running in {display.name(project)}: "
            "wait for it to end, or use --workspace overlay"
        )
    return lease


def _holder(project: str) -> str:
    """Who holds it, as its file says (for the message only)."""
    with contextlib.suppress(OSError, ValueError), open(lock_path(project), encoding="ascii") as handle:
        return f" (nanocode pid {int(handle.read().strip())})"
    return ""
