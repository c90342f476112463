"""A sandbox container's lifecycle: start it hardened and labelled, remove it, and remove what is dead.

Ownership is a lease, not a guess: the runtime and the egress proxy live on their owner's attach
stream and end when it ends (the owner exits, is killed, loses its machine or its connection to the
engine), and their containers stop with them. So a container that is not running is provably dead,
and anyone may remove it; a running one is never removed for a pid, host or namespace that looks
gone: only by its owner, or by `sandbox prune --stale AGE`. The owner labels are for people."""

import contextlib
import functools
import getpass
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import Mount

from nanocode.runtime.client import BOOTSTRAP, NON_INTERACTIVE
from nanocode.sandbox import channel
from nanocode.sandbox.engine import first_line

LABEL = "nanocode"
HOME = "/home/sandbox"
# All a command inside gets: nothing of the host's environment crosses over.
ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": HOME,
    "LANG": "C.UTF-8",
    **NON_INTERACTIVE,
}

# With "=": dockerd warns of the older ":" form at every create.
NO_NEW_PRIVILEGES = "no-new-privileges=true"


@dataclass
class SandboxConfig:
    project: str
    image: str
    memory: str = "2g"
    cpus: float = 2.0
    pids: int = 512
    network: str = "none"
    tmpfs_size: str = "1g"
    # What a network of the goal needs inside (nanocode/egress): its variables, files and resolver.
    environment: dict[str, str] = field(default_factory=dict)
    extra_mounts: list[Mount] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    runtime: str | None = None  # the engine's OCI runtime by name (runc, runsc); None: its default
    # The host user's, so that files made in the project belong to them.
    user: str = field(default_factory=lambda: f"{os.getuid()}:{os.getgid()}")
    # How the project is shared: its workspace's mounts (nanocode.workspace), or protect.project_mounts.
    mounts: list[Mount] = field(default_factory=list)
    # A root filesystem the sandbox may write (dpkg installs into /usr and /var): the container is
    # thrown away with the goal, and its capabilities stay dropped (docs/security.md).
    writable_root: bool = False
    # The owner's lease on the sandbox, in seconds (channel.Heartbeat; 0: the end of stdin alone).
    lease: float = field(default_factory=channel.lease_seconds)


# A container created but not started this long ago is one whose owner died between the two.
START_GRACE = 120.0


@functools.cache
def run_id() -> str:
    """This nanocode's own id: what its labels mean by "mine", whatever pid namespace or host it is in."""
    return secrets.token_hex(8)


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def owner_labels(goal: str, project: str) -> dict[str, str]:
    """Who owns what a goal makes, for people to read: user, host, pid and this run's id."""
    return {
        LABEL: "1",
        f"{LABEL}.goal": goal,
        f"{LABEL}.owner.user": user(),
        f"{LABEL}.owner.pid": str(os.getpid()),
        f"{LABEL}.owner.host": socket.gethostname(),
        f"{LABEL}.owner.run": run_id(),
        f"{LABEL}.started": datetime.now(UTC).isoformat(timespec="seconds"),
        f"{LABEL}.project": project,
    }


def create(client: docker.DockerClient, config: SandboxConfig, goal: str, folder: str | None = None) -> Container:
    """The goal's container, not started; `folder` is shared with it for the runtime's socket."""
    project = config.project
    mounts = config.mounts + config.extra_mounts
    if folder is not None:
        # Read-only: the runtime connects to a socket there (allowed), and may write nothing to the host.
        mounts.append(Mount(target=channel.CONTAINER_FOLDER, source=folder, type="bind", read_only=True))
    tmpfs_options = f"rw,exec,nosuid,nodev,size={config.tmpfs_size},mode=1777"
    return client.containers.create(
        config.image,
        command=[*BOOTSTRAP, "--lease", f"{config.lease:g}"],
        entrypoint=[""],  # an image's own entrypoint would wrap the runtime (Podman keeps it for [])
        name=f"nanocode-{goal}",
        labels=owner_labels(goal, project),
        environment=ENVIRONMENT | config.environment,
        user=config.user,
        working_dir=project,
        mounts=mounts,
        tmpfs={"/tmp": tmpfs_options, HOME: tmpfs_options},
        read_only=not config.writable_root,
        cap_drop=["ALL"],
        security_opt=[NO_NEW_PRIVILEGES],
        mem_limit=config.memory,
        memswap_limit=config.memory,
        nano_cpus=int(config.cpus * 1e9),
        pids_limit=config.pids,
        network_mode=config.network,
        dns=config.dns or None,
        runtime=config.runtime,
        # Without an init, the runtime as PID 1 ignores SIGTERM and a stop waits 10 s.
        init=True,
        ipc_mode="private",
        hostname="sandbox",
        stdin_open=True,
        tty=False,
    )


# Podman refuses a forced removal that meets the container's own exit ("container state improper"),
# and both engines one already under way ("removal in progress"): the removal is tried again.
RACES = ("state improper", "removal of container", "already in progress", "is being removed")
REMOVE_PATIENCE = 10.0


def remove(client: docker.DockerClient, container: str) -> None:
    """Removes a container, by id or name, with its anonymous volumes (raises DockerException)."""
    deadline = time.monotonic() + REMOVE_PATIENCE
    while True:
        try:
            client.api.remove_container(container, force=True, v=True)
            return
        except NotFound:
            return  # already gone is what was wanted
        except APIError as exc:
            if not _raced(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _raced(exc: APIError) -> bool:
    text = f"{exc.explanation or ''} {exc}".lower()
    return any(race in text for race in RACES)


@dataclass
class Listed:
    """A container (or volume, network) as the engine lists it: enough to judge and remove it, without a
    look-up that can race."""

    id: str
    name: str
    status: str
    labels: dict[str, str]
    created: float = 0.0  # seconds since the epoch; 0 where the engine did not say

    def age(self) -> float:
        return time.time() - self.created if self.created else 0.0

    def mine(self) -> bool:
        return self.labels.get(f"{LABEL}.owner.run") == run_id()

    def users(self, everyone: bool) -> bool:
        """Whether a listing or a prune for this user (or for everyone) takes it."""
        return everyone or self.labels.get(f"{LABEL}.owner.user") in (user(), None)

    def dead(self) -> bool:
        """Provably: stopped (its runtime ended with its lease), or created and never started in time."""
        if self.status == "created":
            return self.age() > START_GRACE
        return self.status in ("exited", "dead")


def ours(client: docker.DockerClient) -> list[Listed]:
    rows = client.api.containers(all=True, filters={"label": LABEL})
    return [
        Listed(
            row["Id"],
            (row.get("Names") or ["/" + row["Id"][:12]])[0].lstrip("/"),
            row.get("State", ""),
            row.get("Labels") or {},
            float(row.get("Created") or 0),
        )
        for row in rows
    ]


@dataclass
class Prune:
    """What a prune may take: every user's or only the caller's; running ones too, past `stale` seconds."""

    everyone: bool = False
    stale: float | None = None
    gone: set[str] = field(default_factory=set)  # goals whose containers this prune removed

    def takes(self, item: Listed) -> bool:
        if not item.users(self.everyone) or item.mine():
            return False
        return item.dead() or (self.stale is not None and item.status == "running" and item.age() > self.stale)


def prune_containers(
    client: docker.DockerClient, warn: Callable[[str], None] = lambda text: None, rule: Prune | None = None
) -> list[str]:
    """Removes the dead containers (and, as `rule` says, stale running ones), with their socket folders;
    returns their names, and warns of those that stay."""
    rule = rule or Prune()
    removed = []
    listed = ours(client)
    channel.remove_orphan_folders({c.labels.get(f"{LABEL}.goal", "") for c in listed}, START_GRACE)
    for container in listed:
        if rule.takes(container):
            try:
                remove(client, container.id)
            except DockerException as exc:
                warn(f"warning: the stale sandbox container {container.name} was not removed: {first_line(exc)}")
                continue
            channel.remove_folders(container.labels.get(f"{LABEL}.goal", "") or container.name)
            rule.gone.add(container.labels.get(f"{LABEL}.goal", ""))
            removed.append(container.name)
    return removed


def live_goals(client: docker.DockerClient) -> set[str]:
    """The goals whose sandbox still runs, whoever owns them: nothing of theirs is anyone else's to clean."""
    return {c.labels.get(f"{LABEL}.goal", "") for c in ours(client) if c.status in ("running", "created", "restarting")}


def prune_volumes(client: docker.DockerClient, rule: Prune | None = None) -> list[str]:
    """Removes the volumes (workspace layers) no container uses: the engine refuses to remove one in use,
    and one too new may be a goal's that is still starting."""
    try:
        rows = client.api.volumes(filters={"label": LABEL}).get("Volumes") or []
    except DockerException:
        return []
    listed = [Listed(r["Name"], r["Name"], "", r.get("Labels") or {}, _epoch(r.get("CreatedAt"))) for r in rows]
    return _remove_unused(listed, lambda name: client.api.remove_volume(name), rule or Prune())


def prune_networks(client: docker.DockerClient, rule: Prune | None = None) -> list[str]:
    """A goal's network (nanocode/egress) goes once no container is on it, after its containers."""
    rows = client.api.networks(filters={"label": LABEL})
    listed = [Listed(r["Id"], r.get("Name", ""), "", r.get("Labels") or {}, _epoch(r.get("Created"))) for r in rows]
    return _remove_unused(listed, client.api.remove_network, rule or Prune())


def _remove_unused(listed: list[Listed], remove: Callable[[str], object], rule: Prune) -> list[str]:
    removed = []
    for item in listed:
        # Too new, a volume or network may be a goal's that is still starting, unless its container was dead.
        settled = item.age() > START_GRACE or item.labels.get(f"{LABEL}.goal") in rule.gone
        if item.users(rule.everyone) and not item.mine() and settled:
            with contextlib.suppress(DockerException):  # in use: the engine says no, and it stays
                remove(item.id)
                removed.append(item.name)
    return removed


def _epoch(text: object) -> float:
    """The engine's ISO time (nanoseconds and a zone, as Docker and Podman write it) as epoch seconds."""
    if not isinstance(text, str) or not text:
        return 0.0
    head, _, rest = text.partition(".")
    zone = rest.lstrip("0123456789") if rest else ""
    try:
        when = datetime.fromisoformat(head + (zone.replace("Z", "+00:00") if zone else ""))
    except ValueError:
        return 0.0
    return when.timestamp() if when.tzinfo else when.replace(tzinfo=UTC).timestamp()
