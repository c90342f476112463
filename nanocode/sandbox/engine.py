"""Connecting to the container engine (Docker or Podman), with one clear line when that fails, and
what the engine says of itself: rootless or not, its OCI runtimes, which limits it can enforce."""

import os
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.context import ContextAPI
from docker.errors import DockerException

from nanocode.errors import ConfigError

DEFAULT_SOCKET = "the default socket (/var/run/docker.sock)"
# The limits nanocode sets, by the name the user reads.
LIMITS = ("memory", "CPU", "processes")


@dataclass
class Endpoint:
    """Where the engine is: `host` None means docker-py's own choice (DOCKER_HOST, else the default socket)."""

    host: str | None
    tls: Any
    described: str


def endpoint() -> Endpoint:
    """DOCKER_HOST, else the current Docker context (DOCKER_CONTEXT, or the one `docker context use` chose)."""
    if os.environ.get("DOCKER_HOST"):
        return Endpoint(None, None, os.environ["DOCKER_HOST"])
    name = os.environ.get("DOCKER_CONTEXT") or None
    try:
        context = ContextAPI.get_context(name)
    except (DockerException, OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the Docker context {name or '(current)'}: {exc}") from None
    if context is None:
        shown = name or "that `docker context use` chose"
        raise ConfigError(f"the Docker context {shown!r} does not exist (`docker context ls` lists them)")
    if context.name == "default" or not context.Host:
        return Endpoint(None, None, DEFAULT_SOCKET)
    return Endpoint(context.Host, context.TLSConfig, f"{context.Host} (Docker context {context.name})")


def connect(timeout: float = 60.0) -> docker.DockerClient:
    """A client for DOCKER_HOST, else the current Docker context, else the default socket."""
    where = endpoint()
    try:
        if where.host is None:
            client = docker.from_env(timeout=int(timeout))
        else:
            client = docker.DockerClient(base_url=where.host, tls=where.tls, timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise ConfigError(explain(exc, where.described)) from None
    except OSError as exc:
        raise ConfigError(f"cannot use Docker at {where.described}: {exc}") from None
    return client


def explain(exc: BaseException, host: str = DEFAULT_SOCKET) -> str:
    text = str(exc)
    if "Permission denied" in text or "PermissionError" in text:
        return (
            f"permission denied on the Docker socket at {host}: add your user to the 'docker' group, "
            "or point DOCKER_HOST at a rootless Docker or Podman socket (see README)"
        )
    if "No such file or directory" in text or "FileNotFoundError" in text:
        return (
            f"Docker is not running or not installed (no socket at {host}): start the Docker engine, or set DOCKER_HOST"
        )
    if "Connection refused" in text or "Connection aborted" in text:
        return f"the Docker engine at {host} does not answer (connection refused): is it running?"
    return f"cannot use Docker at {host}: {text.splitlines()[0] if text else type(exc).__name__}"


@dataclass
class Facts:
    """What the engine says of itself, read once per session."""

    product: str  # "Docker 20.10.24", "Podman 4.3.1"
    rootless: bool
    runtime_paths: dict[str, str]  # the OCI runtimes it knows, by name: their programs
    default_runtime: str
    security: list[str]  # SecurityOptions: seccomp, apparmor, selinux, userns, rootless
    cgroup: str  # "v1 cgroupfs"
    unenforced: list[str] = field(default_factory=list)  # of LIMITS
    runtime_args: dict[str, list[str]] = field(default_factory=dict)  # as the engine registered them

    @property
    def runtimes(self) -> list[str]:
        return sorted(self.runtime_paths)


def facts(client: docker.DockerClient) -> Facts:
    try:
        info = client.info()
    except DockerException as exc:
        raise ConfigError(f"the engine did not describe itself: {first_line(exc)}") from None
    libpod = libpod_info(client)
    rootless = is_rootless(info, libpod)
    product = f"Podman {info.get('ServerVersion', '')}" if libpod else f"Docker {info.get('ServerVersion', '')}"
    return Facts(
        product=product.strip(),
        rootless=rootless,
        runtime_paths={
            str(name): str((spec or {}).get("path") or name) for name, spec in (info.get("Runtimes") or {}).items()
        },
        default_runtime=str(info.get("DefaultRuntime") or "runc"),
        security=[str(option) for option in info.get("SecurityOptions") or []],
        cgroup=f"v{info.get('CgroupVersion') or '1'} {info.get('CgroupDriver') or 'cgroupfs'}",
        unenforced=unenforced_limits(info, libpod, rootless),
        runtime_args={
            str(name): [str(arg) for arg in (spec or {}).get("runtimeArgs") or []]
            for name, spec in (info.get("Runtimes") or {}).items()
        },
    )


def libpod_info(client: docker.DockerClient) -> dict[str, Any]:
    """Podman's own description of itself; {} from Docker (which has no /libpod)."""
    try:
        reply = client.api._get(client.api._url("/libpod/info"))
        if reply.status_code != 200:
            return {}
        found = reply.json()
    except (DockerException, OSError, ValueError):
        return {}
    return found if isinstance(found, dict) and "host" in found else {}


def is_rootless(info: dict[str, Any], libpod: dict[str, Any]) -> bool:
    """A rootless engine maps its root to the user who runs it. Docker lists "rootless" among its
    SecurityOptions; Podman before 4.6 does not, and says so in /libpod/info only."""
    if any("rootless" in str(option) for option in info.get("SecurityOptions") or []):
        return True
    return bool(((libpod.get("host") or {}).get("security") or {}).get("rootless"))


# What dockerd says in info()'s Warnings when the kernel or its cgroups cannot hold a limit.
WARNINGS = {"memory": "no memory limit support", "CPU": "no cpu cfs quota support", "processes": "no pids limit"}
INFO_FLAGS = {"memory": "MemoryLimit", "CPU": "CpuCfsQuota", "processes": "PidsLimit"}
CONTROLLERS = {"memory": "memory", "CPU": "cpu", "processes": "pids"}


def unenforced_limits(info: dict[str, Any], libpod: dict[str, Any], rootless: bool) -> list[str]:
    """The limits the engine would accept and not apply. A rootless engine on cgroup v1 cannot
    apply any (it has no cgroup of its own to write); on v2 only the controllers delegated to it."""
    version = str(info.get("CgroupVersion") or "1")
    if rootless and version == "1":
        return list(LIMITS)
    warnings = " ".join(str(w) for w in info.get("Warnings") or []).lower()
    if rootless and "without cgroups" in warnings:
        return list(LIMITS)
    missing = [name for name in LIMITS if WARNINGS[name] in warnings or info.get(INFO_FLAGS[name]) is False]
    controllers = (libpod.get("host") or {}).get("cgroupControllers")
    if rootless and isinstance(controllers, list):
        missing += [name for name in LIMITS if CONTROLLERS[name] not in controllers and name not in missing]
    return [name for name in LIMITS if name in missing]


def check_runtime(facts: Facts, runtime: str | None, networked: bool = False) -> None:
    """A runtime the engine has; one registered without a network (runsc --network=none, as the README
    registers it) cannot give a sandbox that was promised one."""
    if runtime and runtime not in facts.runtimes:
        known = ", ".join(facts.runtimes) or "none"
        raise ConfigError(f"the engine ({facts.product}) has no OCI runtime {runtime!r}: it has {known}")
    if runtime and networked and "--network=none" in facts.runtime_args.get(runtime, []):
        raise ConfigError(
            f"the OCI runtime {runtime} is registered with --network=none: its sandboxes have no network, "
            "so --network and --allow-host cannot work with it"
        )


def first_line(exc: BaseException) -> str:
    """The engine's own words where it gave them (docker-py's str() can leave them out)."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation if explanation else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
