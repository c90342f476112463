"""A goal's allowlisted network: an internal Docker network with no route out, the egress proxy's
container on it and on the outside, and the sandbox on it alone, reaching nothing but the proxy."""

import contextlib
import dataclasses
import json
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.types import Mount

from nanocode.egress import proxy, trust
from nanocode.egress.audit import Audit
from nanocode.errors import ConfigError
from nanocode.interfaces import CommandResult, Recorder, Watch
from nanocode.runtime.client import BOOTSTRAP
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.channel import Heartbeat, SocketTransport
from nanocode.sandbox.container import NO_NEW_PRIVILEGES, SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor

PROXY_SOURCE = Path(proxy.__file__).read_text()
APT_CONF = str(Path(__file__).with_name("apt.conf"))
APT_CA_CONF = str(Path(__file__).with_name("apt-ca.conf"))  # the same, trusting the host's CA bundle
APT_INSIDE = "/etc/nanocode/apt.conf"
# The proxy's name inside: an entry in the sandbox's /etc/hosts, since there is no DNS there.
NAME = "nanocode-egress"
URL = f"http://{NAME}:{proxy.PORT}"
NO_PROXY = "localhost,127.0.0.1"
# What points the usual tools at the proxy inside: the common variables, and the settings of the
# tools that read their own.
PROXY_ENVIRONMENT = {
    "HTTP_PROXY": URL,
    "HTTPS_PROXY": URL,
    "http_proxy": URL,
    "https_proxy": URL,
    "NO_PROXY": NO_PROXY,
    "no_proxy": NO_PROXY,
    "PIP_PROXY": URL,
    "npm_config_proxy": URL,
    "npm_config_https_proxy": URL,
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "http.proxy",
    "GIT_CONFIG_VALUE_0": URL,
    "APT_CONFIG": APT_INSIDE,
    # A download that fails (a certificate refused, a host refused) fails in seconds, not after
    # a minute of the tools' own retries.
    "npm_config_fetch_retries": "1",
    "npm_config_fetch_retry_mintimeout": "1000",
    "npm_config_fetch_retry_maxtimeout": "2000",
    "PIP_RETRIES": "1",
}
# An internal network still gives the host an address on it, where every service of the host bound
# to 0.0.0.0 answers: the bridge gets none.
NETWORK_OPTIONS = {"com.docker.network.bridge.inhibit_ipv4": "true"}
# Mounted over the sandbox's resolver settings: no name server, so a look-up fails at once.
RESOLV_CONF = str(Path(__file__).with_name("resolv.conf"))
# The proxy's own limits: it copies bytes, one thread a connection.
PROXY_MEMORY = "256m"
PROXY_PIDS = 256
START_TIMEOUT = 30.0
# The sandbox's /etc/hosts on the host, in the temporary folder: this prefix, the goal's network id.
HOSTS_PREFIX = "nanocode-hosts-"
DRAIN_SECONDS = 2.0


def host_proxy(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The host's own proxy settings, which the egress proxy goes out through."""
    found = {
        scheme: environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY") or ""
        for scheme in ("http", "https")
    }
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    for scheme, url in found.items():
        try:
            if url:
                proxy.HostProxy(url, [])
        except ValueError as exc:
            raise ConfigError(f"the egress proxy cannot go out through the host's {scheme}_proxy: {exc}") from None
    return {"host_proxy": {k: v for k, v in found.items() if v}, "no_proxy": no_proxy.split(",")}


class GoalNetwork:
    """The network and the proxy of one goal. Made on creation; close() removes both and returns
    the sum of what went through."""

    def __init__(
        self,
        client: docker.DockerClient,
        config: SandboxConfig,
        rules: list[str],
        outside: str,
        recorder: Recorder,
        bundle: str | None = None,
    ):
        self.docker = client
        self.settings: dict[str, Any] = {"allow": rules, "port": proxy.PORT, "lease": config.lease, **host_proxy()}
        self.bundle = bundle
        self.audit = Audit(recorder)
        self.id = uuid.uuid4().hex[:12]
        self.name = f"nanocode-net-{self.id}"
        self.proxy_name = f"nanocode-proxy-{self.id}"
        self.ready = threading.Event()
        self.open: set[int] = set()  # connections the proxy told of, whose record is still to come
        self.quiet = threading.Condition()
        self.transport: SocketTransport | None = None
        self.heartbeat: Heartbeat | None = None  # holds the proxy's lease, as the sandbox's (channel.Heartbeat)
        self.address = ""  # the proxy's, on the goal's network
        self.gateway = ""  # the network's, which nothing holds
        # The sandbox's /etc/hosts: a file of ours, so that the sandbox can start before the proxy has an address.
        self.hosts = ""
        self.made = threading.Event()  # the network exists (or could not be made)
        self.starting: threading.Thread | None = None
        self.failure = ""
        labels = lifecycle.owner_labels(self.id, config.project)
        try:
            # The proxy starts on the outside while the network is made, and joins it while the sandbox starts.
            self.starting = threading.Thread(
                target=self._start_proxy, args=(config.image, outside, labels, bundle), name="nanocode-egress-start"
            )
            self.starting.start()
            try:
                self._create_network(labels)
            finally:
                self.made.set()
        except BaseException:
            self.close()  # an interrupt or a refusal halfway must leave nothing behind
            raise

    def _create_network(self, labels: dict[str, str]) -> None:
        try:
            self.docker.api.create_network(
                self.name, driver="bridge", internal=True, labels=labels, options=NETWORK_OPTIONS
            )
            self.gateway = self.docker.api.inspect_network(self.name)["IPAM"]["Config"][0]["Gateway"]
        except (DockerException, KeyError, IndexError, TypeError) as exc:
            raise ConfigError(f"cannot create the goal's network: {_first_line(exc)}") from None
        descriptor, self.hosts = tempfile.mkstemp(prefix=f"{HOSTS_PREFIX}{self.id}-")
        os.close(descriptor)
        os.chmod(self.hosts, 0o644)
        self._write_hosts()

    def _write_hosts(self) -> None:
        """In place: the sandbox's mount holds on to the file, not its name."""
        proxy_line = f"{self.address}\t{NAME}\n" if self.address else ""
        with open(self.hosts, "w") as file:
            file.write(
                f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tsandbox\n{proxy_line}"
            )

    def _start_proxy(self, image: str, outside: str, labels: dict[str, str], bundle: str | None) -> None:
        try:
            self._create_proxy(image, outside, labels, bundle)
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            self.transport = SocketTransport(self.docker.api.attach_socket(self.proxy_name, params=params))
            self.docker.api.start(self.proxy_name)
            self.settings["refuse"] = engine_subnets(self.docker)
            self.transport.send(json.dumps(PROXY_SOURCE).encode() + b"\n" + json.dumps(self.settings).encode() + b"\n")
            self.heartbeat = Heartbeat(self.transport, self.settings["lease"])
            self.made.wait()
            if not self.gateway:
                return  # the network could not be made: said by the one who made it
            self.docker.api.connect_container_to_network(self.proxy_name, self.name, aliases=[NAME])
            networks = self.docker.api.inspect_container(self.proxy_name)["NetworkSettings"]["Networks"]
            self.address = networks[self.name]["IPAddress"]
            self._write_hosts()
        except ImageNotFound:
            self.failure = f"the sandbox image {image} is not present"
            return
        except (DockerException, OSError, KeyError) as exc:
            self.failure = f"cannot start the egress proxy on network {outside}: {_first_line(exc)}"
            return
        threading.Thread(target=self._listen, name="nanocode-egress-audit", daemon=True).start()

    def _create_proxy(self, image: str, outside: str, labels: dict[str, str], bundle: str | None) -> None:
        mounts = [trust.mount(bundle)] if bundle else []
        self.docker.api.create_container(
            image,
            command=BOOTSTRAP,
            entrypoint="",
            name=self.proxy_name,
            labels=labels,
            environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
            | (trust.environment() if bundle else {}),
            user="65534:65534",
            working_dir="/",
            stdin_open=True,
            host_config=self.docker.api.create_host_config(
                network_mode=outside,
                mounts=mounts,
                read_only=True,
                cap_drop=["ALL"],
                security_opt=[NO_NEW_PRIVILEGES],
                mem_limit=PROXY_MEMORY,
                memswap_limit=PROXY_MEMORY,
                nano_cpus=10**9,
                pids_limit=PROXY_PIDS,
                init=True,
                ipc_mode="private",
            ),
        )

    def _listen(self) -> None:
        """Reads what the proxy tells, a JSON line at a time, until its stream ends."""
        assert self.transport is not None
        buffer = b""
        while True:
            try:
                chunk = self.transport.recv(3600.0)
            except TimeoutError:
                continue
            except Exception:
                return  # closed, however it ended
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._told(line)
            buffer = buffer[-65536:]

    def _told(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("ready"):
            self.ready.set()
        elif isinstance(event.get("open"), int):
            with self.quiet:
                self.open.add(event["open"])
        elif "connection" in event:
            self.audit.add(event["connection"])
            with self.quiet:
                self.open.discard(event.get("number"))
                self.quiet.notify_all()

    def wait_ready(self) -> None:
        """Waits for the proxy's start, which went on while the sandbox started, and for the proxy to listen."""
        if self.starting is not None:
            self.starting.join()
        if self.failure:
            raise ConfigError(self.failure)
        if not self.ready.wait(START_TIMEOUT):
            detail = bytes(self.transport.stderr).decode(errors="replace").strip() if self.transport else ""
            raise ConfigError(f"the egress proxy did not start: {detail or 'no answer'}")

    def confine(self, config: SandboxConfig) -> SandboxConfig:
        """The sandbox's settings on this network: the proxy by name, no DNS, the tools pointed at it."""
        return dataclasses.replace(
            config,
            network=self.name,
            environment=config.environment | PROXY_ENVIRONMENT,
            extra_mounts=[
                *config.extra_mounts,
                Mount(target=APT_INSIDE, source=APT_CA_CONF if self.bundle else APT_CONF, type="bind", read_only=True),
                Mount(target="/etc/resolv.conf", source=RESOLV_CONF, type="bind", read_only=True),
                Mount(target="/etc/hosts", source=self.hosts, type="bind", read_only=True),
            ],
            # Docker's resolver (127.0.0.11) still answers a client that asks it directly: what it
            # would pass on goes to the network's gateway address, which nothing holds.
            dns=[self.gateway],
        )

    def close(self) -> str:
        if self.starting is not None:
            self.starting.join(START_TIMEOUT)  # what it makes is removed below
        with self.quiet:  # the sandbox is gone, so its connections end: their records are on the way
            self.quiet.wait_for(lambda: not self.open, timeout=DRAIN_SECONDS)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.transport is not None:
            with contextlib.suppress(OSError):
                self.transport.sock.shutdown(socket.SHUT_RDWR)
            self.transport.close()
        with contextlib.suppress(Exception):  # the engine may be gone; `sandbox prune` is the way back
            lifecycle.remove(self.docker, self.proxy_name)
        with contextlib.suppress(NotFound), contextlib.suppress(Exception):
            self.docker.api.remove_network(self.name)
        if self.hosts:
            with contextlib.suppress(OSError):
                os.unlink(self.hosts)
        return self.audit.summary()


class AllowlistedSandbox:
    """The executor of a goal on an allowlist: the sandbox on the goal's network, whose only way
    out is the proxy. close() removes the sandbox, then the proxy and the network."""

    def __init__(
        self,
        client: docker.DockerClient,
        config: SandboxConfig,
        rules: list[str],
        outside: str,
        open_sandbox: Callable[[SandboxConfig], SandboxExecutor],
        recorder: Recorder,
        note: Callable[[str], None],
        bundle: str | None = None,
    ):
        self.note = note
        self.recorder = recorder
        self.network = GoalNetwork(client, config, rules, outside, recorder, bundle)
        try:
            self.sandbox = open_sandbox(self.network.confine(config))
        except BaseException:
            self.network.close()
            raise
        try:
            self.network.wait_ready()  # it got ready while the sandbox started
        except BaseException:
            self.close()
            raise

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        return self.sandbox.run(command, timeout, watch)

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        return self.sandbox.read_file(path, lines)

    def write_file(self, path: str, content: str) -> None:
        self.sandbox.write_file(path, content)

    def close(self) -> None:
        try:
            self.sandbox.close()
        finally:
            summary = self.network.close()
            self.recorder.record("network_summary", summary=summary)
            self.note(summary)


def engine_subnets(client: docker.DockerClient) -> list[str]:
    """The address blocks of the engine's networks, which the proxy refuses unless a rule names them."""
    subnets = []
    for network in client.api.networks():
        for block in (network.get("IPAM") or {}).get("Config") or []:
            if isinstance(block, dict) and block.get("Subnet"):
                subnets.append(str(block["Subnet"]))
    return subnets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def remove_orphan_files(client: docker.DockerClient) -> None:
    """The /etc/hosts files of goals whose network is gone (nanocode killed). A goal makes its
    network before its file, so a file found before the networks are listed has its network there."""
    found = list(Path(tempfile.gettempdir()).glob(f"{HOSTS_PREFIX}*"))
    try:
        live = {row.get("Name", "") for row in client.api.networks(filters={"label": lifecycle.LABEL})}
    except DockerException:
        return
    for path in found:
        goal = path.name[len(HOSTS_PREFIX) :].split("-")[0]
        with contextlib.suppress(OSError):
            if f"nanocode-net-{goal}" not in live and path.is_file() and not path.is_symlink():
                path.unlink()
