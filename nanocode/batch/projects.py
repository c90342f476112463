"""The projects' copies on a Ray node: one per content hash, unpacked once and shared by every goal of
that project on the node, in this batch and the next; evicted once no goal holds them.

Invariant: a copy is removed only by whoever holds its lock exclusively, and every goal that uses a
copy holds the same lock shared for as long as its goal runs, so no goal ever sees its project go.
Each copy `DIGEST/` has its lock file `DIGEST.lock` beside it (never inside: the copy is the goal's
project); the lock file's mtime is when a goal last took the copy. A copy is evicted when no goal
holds it and it is either not among the `KEEP` most recently used or unused for `DAYS` days."""

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nanocode.workspace import paths

KEEP = 4  # copies kept on a node, the most recently used, however recent the others
DAYS = 7.0  # and none unused for longer than this
ABANDONED = 3600.0  # seconds after which a half-unpacked or half-removed copy (its process died) goes


def root() -> Path:
    return paths.state() / "ray-projects"


@contextlib.contextmanager
def project_copy(digest: str, data: bytes) -> Iterator[Path]:
    """This node's copy of the project whose tar is `data`, held (shared) for as long as the goal uses
    it; unpacked here once, by the first goal of the project that comes, while the others wait."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError("a project's content hash is 64 hex digits")
    folder = root() / digest
    lock = folder.with_suffix(".lock")
    folder.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with _locked(lock, fcntl.LOCK_SH) as held:
            if folder.is_dir():
                os.utime(held.fileno())  # last used: now
                evict()
                yield folder
                return
        # Never waits for the lock exclusively: goals of one node's actor are threads that wait for
        # each other's turns, and one holding the copy shared may be waiting for this one's.
        with contextlib.suppress(BlockingIOError), _locked(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
            if not folder.is_dir():
                _unpack(folder, digest, data)
            os.utime(held.fileno())
            continue
        time.sleep(0.05)  # another goal unpacks it, or holds it: looked at again, shared


@contextlib.contextmanager
def _locked(path: Path, how: int) -> Iterator[IO[str]]:
    """The lock file at `path`, held (`how`; BlockingIOError with LOCK_NB); one that eviction removed
    meanwhile is made anew."""
    while True:
        with open(path, "a") as handle:
            fcntl.flock(handle, how)
            if _same(handle.fileno(), path):
                yield handle
                return


def _same(descriptor: int, path: Path) -> bool:
    """Whether the file still has this name: eviction removes a lock file only while holding it."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _unpack(folder: Path, digest: str, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError("the project's tar does not match its content hash")
    temporary = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=folder.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(temporary, filter="data")
        temporary.rename(folder)  # whole or not at all
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def evict(now: float | None = None) -> list[str]:
    """Removes the copies no goal holds that are beyond the `KEEP` most recently used or unused for
    `DAYS` days, and what a process that died left half-done; returns the digests removed."""
    now = time.time() if now is None else now
    locks = sorted(root().glob("*.lock"), key=_last_used, reverse=True)
    stale = [lock for n, lock in enumerate(locks) if n >= KEEP or now - _last_used(lock) > DAYS * 86400]
    removed = [lock.stem for lock in stale if _remove(lock)]
    _sweep_abandoned(now)
    return removed


def _last_used(lock: Path) -> float:
    try:
        return lock.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(lock: Path) -> bool:
    """Removes the copy of `lock` if no goal holds it: renamed away first, so that no goal can find
    it half removed, then its lock file, while still held, so that a goal waiting on it starts anew."""
    try:
        with open(lock) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a goal uses it
            if not _same(handle.fileno(), lock):
                return False
            folder = lock.with_suffix("")
            if folder.is_dir():
                doomed = Path(tempfile.mkdtemp(prefix=".gone-", dir=lock.parent))
                folder.rename(doomed / "copy")
                shutil.rmtree(doomed, ignore_errors=True)
            lock.unlink()
            return True
    except OSError:  # gone already, or held
        return False


def _sweep_abandoned(now: float) -> None:
    for child in root().glob(".*"):
        with contextlib.suppress(FileNotFoundError):
            if now - child.stat().st_mtime > ABANDONED:
                shutil.rmtree(child, ignore_errors=True)
