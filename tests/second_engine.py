"""A second Docker engine that cannot see the host's paths: for tests of remote engines.

    def test_x(second_engine: SecondEngine) -> None:
        second_engine.url        # "tcp://127.0.0.1:<port>": set DOCKER_HOST to it
        second_engine.client     # a docker.DockerClient for it
        second_engine.image      # the sandbox image, loaded into it

`second_engine` (session-scoped, registered in conftest.py) starts `dockerd` in mount and network
namespaces of its own: its /tmp is a private tmpfs (pytest's tmp_path is under /tmp: the engine
cannot see it), and whatever it does to networking (its bridge, its iptables rules) stays in its
own namespace, away from the main engine's. It has its own data and exec roots and listens on a
unix socket there; the tests reach it over TCP on 127.0.0.1, through a relay in the test process.
The sandbox image is copied in with `docker save | docker load`. At the end of the session the
engine is stopped and its data removed. It needs root, `unshare`, `ip` and `dockerd`; where they
are missing the tests that use it skip, or fail under NANOCODE_REQUIRE_DOCKER=1 (as in CI). It is
started only with NANOCODE_TEST_SECOND_ENGINE=1 (.ci/run sets it); elsewhere its tests skip, saying so.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

START_TIMEOUT = 90.0


@dataclass
class SecondEngine:
    url: str
    client: Any  # docker.DockerClient
    image: str
    process: subprocess.Popen[bytes]
    root: str  # data root, exec root and log, removed at the end
    relay: "Relay"


def _unavailable(reason: str) -> None:
    if os.environ.get("NANOCODE_REQUIRE_DOCKER") == "1":
        pytest.fail(f"the second Docker engine is required here (NANOCODE_REQUIRE_DOCKER=1): {reason}")
    pytest.skip(f"no second Docker engine: {reason}")


OPT_IN = "NANOCODE_TEST_SECOND_ENGINE"


def start_second_engine(image: str) -> SecondEngine:
    """Starts the engine, waits for it, and loads `image` into it: only where asked (CI asks), since it
    is a daemon of its own that a workstation's `make test` should not start unbidden."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"a second Docker engine is started only with {OPT_IN}=1 (as in CI)")
    if os.geteuid() != 0:
        _unavailable("starting dockerd needs root")
    for tool in ("dockerd", "unshare", "docker", "ip"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed")
    root = tempfile.mkdtemp(prefix="nanocode-engine-", dir="/var/tmp")  # not under /tmp: the engine has its own
    config = os.path.join(root, "daemon.json")
    with open(config, "w") as f:
        json.dump({}, f)  # not the main engine's daemon.json
    sock = os.path.join(root, "exec", "docker.sock")
    command = (
        "ip link set lo up && mount -t tmpfs -o size=256m,mode=1777 tmpfs /tmp"
        # A system containerd (docker.io's) would be shared with the main engine: hidden, so that
        # dockerd starts one of its own under its exec root.
        " && { [ ! -d /run/containerd ] || mount -t tmpfs -o size=1m tmpfs /run/containerd; } && exec dockerd"
        f" --config-file {config} --data-root {root}/data --exec-root {root}/exec --pidfile {root}/exec/dockerd.pid"
        f" -H unix://{sock} --iptables=false --ip-masq=false --userland-proxy=false"
        " --cgroup-parent=nanocode-second-engine --log-level=warn"
    )
    log = open(os.path.join(root, "dockerd.log"), "wb")  # noqa: SIM115 (open while the engine runs)
    process = subprocess.Popen(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", command],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    relay = Relay(sock)
    engine = SecondEngine(relay.url, None, image, process, root, relay)
    try:
        engine.client = _wait(engine)
        _load(image, f"unix://{sock}")
    except BaseException:
        stop_second_engine(engine)
        raise
    return engine


class Relay:
    """127.0.0.1:<free port> to the engine's unix socket, byte for byte, both ways (attach streams too)."""

    def __init__(self, target: str):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: set[socket.socket] = set()
        self.closed = False
        self.frozen = False  # bytes are read and dropped, and every connection stays open
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX)
        try:
            engine.connect(self.target)
        except OSError:
            client.close()
            return
        with self.lock:
            if self.closed:  # accepted as it closed: the engine answers no more
                client.close()
                engine.close()
                return
            self.open |= {client, engine}
        back = threading.Thread(target=self._pump, args=(engine, client), daemon=True)
        back.start()
        self._pump(client, engine)
        back.join()
        with self.lock:
            self.open -= {client, engine}
        for end in (client, engine):
            end.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if not self.frozen:
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def freeze(self) -> None:
        """As a machine gone or a network cut looks to the engine: nothing more comes, and nothing ends."""
        self.frozen = True

    def close(self) -> None:
        """No connection is served from now on: a listener closed while a thread waits in accept() still
        listens until that accept returns, so it is shut down first, which wakes it."""
        with self.lock:
            self.closed = True
            ends = list(self.open)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _wait(engine: SecondEngine) -> Any:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            break
        with contextlib.suppress(Exception):
            client = docker.DockerClient(base_url=engine.url, timeout=120)
            client.ping()
            return client
        time.sleep(0.3)
    with open(os.path.join(engine.root, "dockerd.log"), errors="replace") as f:
        tail = f.read()[-2000:]
    pytest.fail(f"the second dockerd did not start: {tail}")


def _load(image: str, url: str) -> None:
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "-H", url, "load", "-q"], stdin=save.stdout, capture_output=True, timeout=600)
    assert save.stdout is not None
    save.stdout.close()
    if save.wait(timeout=600) != 0 or load.returncode != 0:
        pytest.fail(f"could not load {image} into the second engine: {load.stderr.decode(errors='replace')}")


def stop_second_engine(engine: SecondEngine) -> None:
    """Removes its containers and volumes, stops it, and removes its data."""
    if engine.client is not None:
        with contextlib.suppress(Exception):
            for row in engine.client.api.containers(all=True):
                engine.client.api.remove_container(row["Id"], force=True, v=True)
            for row in engine.client.api.volumes().get("Volumes") or []:
                engine.client.api.remove_volume(row["Name"], force=True)
        engine.client.close()
    if engine.process.poll() is None:
        os.killpg(engine.process.pid, signal.SIGTERM)
        try:
            engine.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(engine.process.pid, signal.SIGKILL)
            engine.process.wait(timeout=30)
    engine.relay.close()
    # Its mounts were in its own namespace, gone with it: what is left is plain files.
    shutil.rmtree(engine.root, ignore_errors=True)


@pytest.fixture(scope="session")
def second_engine(docker_engine: Any, sandbox_image: str) -> Iterator[SecondEngine]:
    engine = start_second_engine(sandbox_image)
    yield engine
    stop_second_engine(engine)
