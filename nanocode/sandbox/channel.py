"""The byte channels to the runtime inside the container: Docker's multiplexed attach stream,
and a unix socket straight to the runtime through a folder shared with the container."""

import contextlib
import glob
import os
import re
import secrets
import socket
import stat
import struct
import tempfile
import threading
import time
from typing import Any

from nanocode.runtime.client import RuntimeClient, Transport
from nanocode.runtime.server import proc_stat

HEADER = struct.Struct(">BxxxL")
STDOUT = 1


def raw_socket(attached: Any) -> socket.socket:
    """The plain socket under what docker-py hands back (a SocketIO for unix and tcp)."""
    return getattr(attached, "_sock", attached)  # type: ignore[no-any-return]


class SocketTransport:
    def __init__(self, attached: Any):
        self._attached = attached  # keeps docker-py's response, and so the socket, alive
        self.sock = raw_socket(attached)
        self._pending = bytearray()
        self.stderr = bytearray()
        self._sending = threading.Lock()  # a heartbeat never lands inside a request

    def send(self, data: bytes) -> None:
        with self._sending:
            self.sock.settimeout(60.0)  # recv() leaves a short timeout behind; a large write must not hit it
            self.sock.sendall(data)

    def beat(self) -> None:
        """One newline, that the runtime takes as its owner still there (raises OSError)."""
        with self._sending:
            self.sock.send(b"\n")  # one byte: it never waits, and leaves the socket's timeout as it was

    def recv(self, timeout: float) -> bytes:
        while True:
            payload = self._next_frame()
            if payload:
                return payload
            self.sock.settimeout(timeout)
            chunk = self.sock.recv(1 << 16)  # socket.timeout is TimeoutError
            if not chunk:
                return b""
            self._pending += chunk

    def _next_frame(self) -> bytes:
        while len(self._pending) >= HEADER.size:
            stream, size = HEADER.unpack_from(self._pending)
            if len(self._pending) < HEADER.size + size:
                return b""
            payload = bytes(self._pending[HEADER.size : HEADER.size + size])
            del self._pending[: HEADER.size + size]
            if stream == STDOUT:
                return payload
            self.stderr = (self.stderr + payload)[-4096:]
        return b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# Where the shared folder appears in the container, and the socket's name in it.
CONTAINER_FOLDER = "/run/nanocode"
SOCKET_NAME = "runtime.sock"


def _base() -> str:
    """Sockets belong in the user's runtime folder where there is one."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    return runtime_dir if runtime_dir and os.access(runtime_dir, os.W_OK | os.X_OK) else tempfile.gettempdir()


def make_folder(goal: str) -> str:
    """A folder for one goal's socket, that only this user can enter, named for the goal: it lives as
    long as the goal's container does (remove_orphan_folders), never judged by a pid. The suffix is
    random: the name cannot be guessed ahead."""
    path = os.path.join(_base(), f"nanocode-{goal}-{secrets.token_hex(4)}")
    os.mkdir(path, 0o700)  # never follows a link, and fails where anything of that name exists
    return path


# make_folder's names: the goal (12 hex digits) and 8 random characters. Those of earlier versions
# carried their owner's pid and start time instead, which tell nothing across pid namespaces.
FOLDER_NAME = re.compile(r"nanocode-([0-9a-f]{12})-(?:\d{1,9}-\d{0,20}|[A-Za-z0-9_]{8})")


def process_start(pid: int) -> str:
    """When a process started (clock ticks since boot), so that a reused pid is not taken for its owner."""
    try:
        return proc_stat(pid)[19].decode()
    except (OSError, IndexError):
        return ""


def remove_folder(path: str) -> None:
    """Removes a socket folder: empty, or holding only the socket; anything else is not ours to remove."""
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return  # a symlink, say: what it points to is not ours
        socket_path = os.path.join(path, SOCKET_NAME)
        if os.path.lexists(socket_path) and stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            os.unlink(socket_path)
        os.rmdir(path)


def remove_folders(goal: str) -> None:
    for path in glob.glob(os.path.join(_base(), f"nanocode-{glob.escape(goal)}-*")):
        if FOLDER_NAME.fullmatch(os.path.basename(path)):
            remove_folder(path)


def remove_orphan_folders(goals: set[str], older_than: float) -> None:
    """Folders whose goal has no container (nanocode killed before it made one, or while it removed
    it), once old enough that no goal can still be starting with them. A goal's container that
    exited goes with its folder (remove_folders), in the prune that removes it."""
    for path in glob.glob(os.path.join(_base(), "nanocode-*")):
        name = FOLDER_NAME.fullmatch(os.path.basename(path))
        if not name or name.group(1) in goals:
            continue
        with contextlib.suppress(OSError):
            if time.time() - os.lstat(path).st_mtime > older_than:
                remove_folder(path)


# How long the runtime outlives its owner's last word (the lease, in seconds), and how many words
# the owner says in that time: enough that a busy machine's delays do not end a goal that lives.
LEASE = 10.0
BEATS_PER_LEASE = 5


def lease_seconds() -> float:
    """The lease the host gives its sandboxes: NANOCODE_LEASE where set (seconds, 0 for none)."""
    try:
        return max(float(os.environ.get("NANOCODE_LEASE") or LEASE), 0.0)
    except ValueError:
        return LEASE


class Heartbeat:
    """Holds the runtime's lease: a newline on its stdin every lease/BEATS_PER_LEASE seconds, from a
    thread of the owner's, until stopped or the stream is closed. When the owner goes, so do its
    heartbeats, whatever the engine does with the stream."""

    def __init__(self, transport: SocketTransport, lease: float):
        self.transport = transport
        self.interval = lease / BEATS_PER_LEASE
        self.stopped = threading.Event()
        if lease:
            threading.Thread(target=self._beat, name="nanocode-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.transport.beat()
            except TimeoutError:
                continue  # the runtime is not reading yet: the stream is still there
            except OSError:
                return  # the stream is closed

    def stop(self) -> None:
        self.stopped.set()


class DirectTransport:
    """The unix socket to the runtime. The attach stream stays open beside it: it is the
    runtime's stdin, whose end (this process gone) ends the runtime and so the container. What
    arrives on it (anything written to the container's stdout) is read and dropped, so that no
    writer there ever blocks."""

    def __init__(self, sock: socket.socket, attached: Transport):
        self.sock = sock
        self.attached = attached
        threading.Thread(target=self._drain, name="nanocode-attach-drain", daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                if not self.attached.recv(3600.0):
                    return
            except TimeoutError:
                continue  # an hour of quiet
            except Exception:
                return  # the stream is closed, however it ended

    def send(self, data: bytes) -> None:
        self.sock.settimeout(60.0)
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(1 << 16)  # socket.timeout is TimeoutError

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            getattr(self.attached, "sock", self.sock).shutdown(socket.SHUT_RDWR)  # wakes the drain
        self.attached.close()


def go_direct(runtime: RuntimeClient, attached: Transport, folder: str, inside: str = CONTAINER_FOLDER) -> bool:
    """Moves the runtime's requests to a unix socket in the shared folder, which skips the engine's
    relay of the attach stream (about half of a round trip, more on an idle machine). This side
    listens; the runtime connects and says the token it was given over the attach stream. Where
    that cannot work (an engine on another machine, a folder the container's user may not enter),
    the attach stream goes on serving, and False says so. `inside`: the folder as the runtime sees it."""
    token = secrets.token_hex(16)
    path = os.path.join(folder, SOCKET_NAME)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock: socket.socket | None = None
    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(5.0)
        reply = runtime.request("socket", 10.0, path=f"{inside}/{SOCKET_NAME}", token=token)
        if not reply.get("ok"):
            return False
        sock = listener.accept()[0]
        sock.settimeout(5.0)
        line = b""
        while not line.endswith(b"\n"):
            if len(line) > len(token) + 1:
                raise OSError("something other than the runtime connected")
            chunk = sock.recv(256)
            if not chunk:
                raise OSError("the socket closed before the runtime said its token")
            line += chunk
        if line != token.encode() + b"\n":
            raise OSError("something other than the runtime connected")
    except OSError:
        if sock is not None:
            sock.close()
        return False
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)  # nothing else may connect
    runtime.transport = DirectTransport(sock, attached)
    return True
