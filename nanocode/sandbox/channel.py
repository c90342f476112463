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

    def send(self, data: bytes) -> None:
        self.sock.settimeout(60.0)  # recv() leaves a short timeout behind; a large write must not hit it
        self.sock.sendall(data)

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
    """A folder for one goal's socket, that only this user can enter. Its name tells its owner (pid
    and start time), so that once that process is gone the next start removes it at once, even if
    no container was ever made for it. The goal is random: the name cannot be guessed ahead."""
    pid = os.getpid()
    path = os.path.join(_base(), f"nanocode-{goal}-{pid}-{process_start(pid)}")
    os.mkdir(path, 0o700)  # never follows a link, and fails where anything of that name exists
    return path


# make_folder's names: the goal (12 hex digits), the owner's pid and start time (as many digits as
# they can have: anyone may make a folder of such a name). Those of earlier versions end in mkdtemp's
# 8 characters instead, and tell no owner.
FOLDER_NAME = re.compile(r"nanocode-([0-9a-f]{12})-(?:(\d{1,9})-(\d{0,20})|[A-Za-z0-9_]{8})")


def process_start(pid: int) -> str:
    """When a process started (clock ticks since boot), so that a reused pid is not taken for its owner."""
    try:
        return proc_stat(pid)[19].decode()
    except (OSError, IndexError):
        return ""


def owner_gone(pid: int, start: str) -> bool:
    """True when the process `pid` that started at `start` (process_start) is no longer running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    return bool(start) and os.path.exists(f"/proc/{pid}") and process_start(pid) != start


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


def remove_orphan_folders(goals: set[str], older_than: float = 600.0) -> None:
    """Folders whose goal has no container (nanocode killed before it made one, or while it removed
    it): at once where their owner is gone; where the name tells no owner, once old enough that no
    goal can still be starting with them."""
    for path in glob.glob(os.path.join(_base(), "nanocode-*")):
        name = FOLDER_NAME.fullmatch(os.path.basename(path))
        if not name or name.group(1) in goals:
            continue
        with contextlib.suppress(OSError):
            if name.group(2) is not None:
                orphan = owner_gone(int(name.group(2)), name.group(3))
            else:
                orphan = time.time() - os.lstat(path).st_mtime > older_than
            if orphan:
                remove_folder(path)


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
