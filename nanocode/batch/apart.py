"""Work in a child process of its own, for a Ray driver: Ray ends its driver process on the spot when
the node it joined goes (the connection to that node's object store breaks) and after a minute of a
GCS that is gone, with none of Python's clean-up run. The parent, which never imports Ray, hears how
the child ended: its exit code, an error to show as its own, or nothing at all, which is Ray's end."""

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType

import click

from nanocode.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, NanocodeError, internal

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
LEAVING = 10.0  # seconds the child has to leave the cluster once it has said how the work ended


def relayed(message: str, exit_code: int) -> NanocodeError:
    """An error the child met, shown by the parent as the child would have shown it."""
    kind: type[NanocodeError] = type("Relayed", (NanocodeError,), {"exit_code": exit_code})
    return kind(message)


def apart(work: Callable[[], int], after: Callable[[], None]) -> int | None:
    """`work`'s exit code, run in a child process, which then runs `after` (Ray may end the process
    there, as it leaves the cluster: the child has said how the work ended by then); None when the
    child ended without saying it. An error in the child is raised here, with its message and code."""
    read, write = os.pipe()
    parent = os.getpid()
    # Held back until the parent forwards them: one that came in between would end the parent alone.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # pragma: no cover - the child's coverage is the tests' subprocesses
        _child(work, after, (read, write), parent)
    os.close(write)
    with _forwarded(pid), os.fdopen(read, "rb") as said:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        told = said.read()
        _reap(pid)
    return _heard(told)


def _reap(pid: int) -> None:
    """The child, once it has said how the work ended, leaves the cluster (`after`): it has LEAVING
    seconds for that, then is killed, so that a cluster gone never holds nanocode after its summary."""
    deadline = time.monotonic() + LEAVING
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _heard(told: bytes) -> int | None:
    try:
        code, error = json.loads(told)
    except ValueError:  # nothing, or cut off: Ray ended the child as it spoke
        return None
    if error is not None:
        raise relayed(error, code)
    return int(code)


def _child(work: Callable[[], int], after: Callable[[], None], pipe: tuple[int, int], parent: int) -> None:
    """Runs `work` in a process group of its own (a terminal's Ctrl-C reaches it once, through the
    parent), says how it ended, runs `after`; never returns. Ctrl-C, SIGTERM and SIGHUP stop the work
    (KeyboardInterrupt) until it has ended, and nothing after: whatever comes, the child says a word."""
    ended = threading.Event()
    error: str | None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not ended.is_set():
            raise KeyboardInterrupt

    code, error = EXIT_INTERRUPTED, "interrupted"
    try:
        try:
            os.close(pipe[0])
            os.setpgid(0, 0)
            # In a terminal's background now: with `stty tostop`, its first line would stop it for good.
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            for sig in FORWARDED:  # one ignored where nanocode was started stays ignored
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    signal.signal(sig, interrupt)
            _stop_with_parent(parent)
            code, error = _ending(work)
        except BaseException:  # a signal before the work began, or as it ended
            code, error = EXIT_INTERRUPTED, "interrupted"
        ended.set()
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(pipe[1], json.dumps([code, error]).encode())
            os.close(pipe[1])
        with contextlib.suppress(BaseException):
            after()
    finally:
        os._exit(code)


def _stop_with_parent(parent: int) -> None:
    """A parent killed outright (SIGKILL) stops the batch as a SIGTERM would: the kernel sends the child
    one when its parent ends (Linux's PR_SET_PDEATHSIG), and one that ended already is looked for."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _ending(work: Callable[[], int]) -> tuple[int, str | None]:
    """The exit code, and the error to show (as nanocode's main would have shown it) or None."""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # here: a signal held back stops the work
        return work(), None
    except click.ClickException as exc:
        return exc.exit_code, exc.format_message()
    except (KeyboardInterrupt, click.exceptions.Abort, SystemExit):  # SystemExit: Ray's own SIGTERM handler
        return EXIT_INTERRUPTED, "interrupted"
    except Exception as exc:
        if os.environ.get("NANOCODE_DEBUG"):
            traceback.print_exc()
        return EXIT_INTERNAL, internal(exc)


@contextlib.contextmanager
def _forwarded(pid: int) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP sent to the parent go to the child, which stops the batch."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    # One ignored where nanocode was started (a background job's SIGINT) stays ignored.
    taken = [sig for sig in FORWARDED if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, forward) for sig in taken}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
