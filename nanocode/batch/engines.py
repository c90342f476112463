"""The engines a batch spreads its goals over: each with its client, its room and its workers."""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nanocode.batch.ledger import Ledger
from nanocode.errors import ConfigError

SHARE = 0.75  # of an engine's memory and CPUs, by default


@dataclass
class Slot:
    """One engine of the batch (or the host, without a sandbox)."""

    name: str
    client: Any  # docker.DockerClient, or None on the host
    ledger: Ledger
    workers: int = 1
    why: str = ""  # what set the number of workers, for the start line
    alive: bool = True
    pending: int = 0  # goals taken from the queue and being prepared
    engine: Any = None  # the session's Engine: client and image
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answers(self, within: float = 3.0) -> bool:
        """False if the engine fails to answer a ping within a few seconds: one that is shutting down
        still answers some requests, and fails the others, for a moment before it goes."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.client.ping()
            except Exception:
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.3)


def parse_spec(spec: str) -> tuple[str, int | None]:
    """`URL_OR_CONTEXT` or `URL_OR_CONTEXT=WORKERS`."""
    name, _, count = spec.rpartition("=") if "=" in spec else (spec, "", "")
    if not count:
        return spec, None
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--engine {spec}: the worker count after '=' must be a whole number of at least 1")
    return name, int(count)


def connect(name: str) -> Any:
    """A client for a DOCKER_HOST URL or a Docker context name; one line when it does not answer."""
    import docker
    from docker.context import ContextAPI
    from docker.errors import DockerException

    try:
        if "://" in name:
            client = docker.DockerClient(base_url=name, timeout=60)
        else:
            context = ContextAPI.get_context(name)
            if context is None:
                raise ConfigError(f"--engine {name}: no such Docker context (docker context ls)")
            client = docker.DockerClient(base_url=context.Host, tls=context.TLSConfig, timeout=60)
        client.ping()
    except DockerException as exc:
        raise ConfigError(f"--engine {name} does not answer: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return client


def capacity(client: Any) -> tuple[int, float]:
    """The engine's memory and CPUs, as it reports them."""
    info = client.info()
    return int(info.get("MemTotal") or 0), float(info.get("NCPU") or 1)


PER_CORE = 4  # sandboxes a core, by default: goals spend most of their time waiting for the model


@dataclass
class Sizing:
    """How many goals run at once on an engine, and why: said on the batch's start line."""

    workers: int
    why: str


def default_workers(ledger: Ledger, memory: int, cpus: float, goals: int, cores: float) -> Sizing:
    """Sized by memory (each sandbox's --memory within the total) and by a CPU oversubscription that
    suits goals waiting on a model: a sandbox's --cpus is its ceiling, not a reservation, unless
    --max-cpus-total asks for one."""
    limits = {
        f"memory for {ledger.memory // max(memory, 1)}": ledger.memory // max(memory, 1),
        f"{PER_CORE} a core for {int(cores * PER_CORE)}": int(cores * PER_CORE),
        f"{goals} goal{'s' if goals != 1 else ''}": goals,
    }
    if math.isfinite(ledger.cpus):
        reserved = int(ledger.cpus / min(cpus, ledger.cpus) + 1e-9)
        limits[f"--max-cpus-total for {reserved}"] = reserved
    workers = max(1, min(limits.values()))
    return Sizing(workers, ", ".join(limits))


def copy_image(source: Any, target: Any, name: str, tag: str, note: Callable[[str], None]) -> None:
    """The sandbox image, from the engine that has it to one that lacks it, streamed from one to the
    other: engines share no registry, and the image may exist nowhere else."""
    from docker.errors import DockerException

    try:
        if _has_image(target, tag):
            return
        note(f"batch: copying the sandbox image {tag} to {name}")
        for said in target.api.load_image(source.api.get_image(tag), quiet=True):
            if "error" in said:
                raise ConfigError(f"could not copy the sandbox image {tag} to {name}: {said['error']}")
        if not _has_image(target, tag):  # a load that ended early names no image
            raise ConfigError(f"could not copy the sandbox image {tag} to {name}")
    except DockerException as exc:
        raise ConfigError(f"could not copy the sandbox image {tag} to {name}: {str(exc).splitlines()[0]}") from None


def _has_image(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True
