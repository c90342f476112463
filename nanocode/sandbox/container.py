"""A sandbox container's lifecycle: start it hardened and labelled, remove it, find the stale ones."""

import contextlib
import os
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
from nanocode.sandbox.channel import owner_gone, process_start
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


def owner_labels(goal: str, project: str) -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL: "1",
        f"{LABEL}.goal": goal,
        f"{LABEL}.owner.pid": str(pid),
        f"{LABEL}.owner.host": socket.gethostname(),
        f"{LABEL}.owner.start": process_start(pid),
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
        command=BOOTSTRAP,
        entrypoint=[""],  # an image's own entrypoint would wrap the runtime (Podman keeps it for [])
        name=f"nanocode-{goal}",
        labels=owner_labels(goal, project),
        environment=ENVIRONMENT | config.environment,
        user=config.user,
        working_dir=project,
        mounts=mounts,
        tmpfs={"/tmp": tmpfs_options, HOME: tmpfs_options},
        read_only=True,
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
    """A container as the engine lists it: enough to judge and remove it, without a look-up that can race."""

    id: str
    name: str
    status: str
    labels: dict[str, str]


def ours(client: docker.DockerClient) -> list[Listed]:
    rows = client.api.containers(all=True, filters={"label": LABEL})
    return [
        Listed(
            row["Id"],
            (row.get("Names") or ["/" + row["Id"][:12]])[0].lstrip("/"),
            row.get("State", ""),
            row.get("Labels") or {},
        )
        for row in rows
    ]


def is_stale(container: Listed) -> bool:
    """True when the nanocode process that started the container is gone (on this host)."""
    labels = container.labels
    if labels.get(f"{LABEL}.owner.host") != socket.gethostname():
        return False
    try:
        pid = int(labels.get(f"{LABEL}.owner.pid", ""))
    except ValueError:
        return True
    return owner_gone(pid, labels.get(f"{LABEL}.owner.start", ""))


def prune_containers(client: docker.DockerClient, warn: Callable[[str], None] = lambda text: None) -> list[str]:
    """Removes the containers whose owner is gone, with their socket folders; returns their names, and
    warns of those that stay."""
    removed = []
    listed = ours(client)
    channel.remove_orphan_folders({c.labels.get(f"{LABEL}.goal", "") for c in listed})
    for container in listed:
        if is_stale(container):
            try:
                remove(client, container.id)
            except DockerException as exc:
                warn(f"warning: the stale sandbox container {container.name} was not removed: {first_line(exc)}")
                continue
            channel.remove_folders(container.labels.get(f"{LABEL}.goal", "") or container.name)
            removed.append(container.name)
    return removed


def prune_volumes(client: docker.DockerClient) -> list[str]:
    """Removes the volumes (workspace layers) whose owner is gone; returns their names."""
    try:
        rows = client.api.volumes(filters={"label": LABEL}).get("Volumes") or []
    except DockerException:
        return []
    listed = [Listed(row["Name"], row["Name"], "", row.get("Labels") or {}) for row in rows]
    return _remove_stale(listed, lambda name: client.api.remove_volume(name, force=True))


def prune_networks(client: docker.DockerClient) -> list[str]:
    """A goal's network (nanocode/egress) goes once its owner is gone, after its containers."""
    rows = client.api.networks(filters={"label": LABEL})
    listed = [Listed(row["Id"], row.get("Name", ""), "", row.get("Labels") or {}) for row in rows]
    return _remove_stale(listed, client.api.remove_network)


def _remove_stale(listed: list[Listed], remove: Callable[[str], object]) -> list[str]:
    removed = []
    for item in listed:
        if is_stale(item):
            with contextlib.suppress(DockerException):
                remove(item.id)
                removed.append(item.name)
    return removed
