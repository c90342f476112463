"""A whole deadline for an HTTP exchange: connecting, sending, the status line and headers, and
the body. A socket timeout bounds each read, so a server that sends a byte every half second holds
a request for ever within it; here every socket the exchange uses is shut down when its time is up,
which ends the read under way, whichever phase it is in.

Invariant: every connection a `Session` from `session()` makes or reuses inside `whole(seconds)`
is watched by that deadline (it is registered when made and again before each response is read).
"""

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager


class Watch:
    """The sockets of one exchange, shut down together when its time is up."""

    def __init__(self) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: Any) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()  # the watch of the exchange this thread is in, if any


def _register(sock: Any) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.add(sock)


@contextlib.contextmanager
def whole(seconds: float) -> Iterator[Watch]:
    """Everything this thread's watched sessions do inside ends by `seconds` from now: a read then
    fails (as a broken connection), and `Watch.expired` says that the deadline was the cause."""
    watch = Watch()
    previous = getattr(_current, "watch", None)
    _current.watch = watch
    timer = threading.Timer(seconds, watch.expire)
    timer.daemon = True
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _current.watch = previous


class _Watched:
    """Registers its socket when made (before a TLS handshake) and before each response is read."""

    sock: Any

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _register(sock)
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _register(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _Connection(_Watched, HTTPConnection):
    pass


class _TLSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def _watch_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        return _watch_pools(super().proxy_manager_for(proxy, **kwargs))


def session() -> requests.Session:
    """A session whose connections a `whole` deadline watches."""
    made = requests.Session()
    for prefix in ("http://", "https://"):
        made.mount(prefix, _Adapter())
    return made
