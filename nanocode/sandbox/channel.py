"""The byte channel to the runtime inside the container: Docker's multiplexed attach stream."""

import contextlib
import socket
import struct
from typing import Any

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
