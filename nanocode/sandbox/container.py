"""A sandbox container's lifecycle: start it hardened and labelled, remove it, find the stale ones."""

import contextlib
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.models.containers import Container
from docker.types import Mount

from nanocode.runtime.client import BOOTSTRAP, NON_INTERACTIVE
from nanocode.runtime.server import proc_stat
from nanocode.sandbox import channel, protect

LABEL = "nanocode"
HOME = "/home/sandbox"
# All a command inside gets: nothing of the host's environment crosses over.
ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": HOME,
    "LANG": "C.UTF-8",
    **NON_INTERACTIVE,
}


@dataclass
class SandboxConfig:
    project: str
    image: str
    memory: str = "2g"
    cpus: float = 2.0
    pids: int = 512
    network: str = "none"
    tmpfs_size: str = "1g"
    # The host user's, so that files made in the project belong to them.
    user: str = field(default_factory=lambda: f"{os.getuid()}:{os.getgid()}")
    # How the project is shared, from its workspace; None: bind-mounted, with protect's mounts.
    mounts: list[Mount] | None = None


def process_start(pid: int) -> str:
    """When a process started (clock ticks since boot), so that a reused pid is not taken for its owner."""
    try:
        return proc_stat(pid)[19].decode()
    except (OSError, IndexError):
        return ""


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
    if config.mounts is not None:
        mounts = list(config.mounts)
    else:
        mounts = [Mount(target=project, source=project, type="bind", read_only=False)]
        mounts += protect.protected_mounts(project, os.getcwd())
    if folder is not None:
        # Read-only: the runtime connects to a socket there (allowed), and may write nothing to the host.
        mounts.append(Mount(target=channel.CONTAINER_FOLDER, source=folder, type="bind", read_only=True))
    tmpfs_options = f"rw,exec,nosuid,nodev,size={config.tmpfs_size},mode=1777"
    return client.containers.create(
        config.image,
        command=BOOTSTRAP,
        entrypoint="",  # an image's own entrypoint would wrap the runtime
        name=f"nanocode-{goal}",
        labels=owner_labels(goal, project),
        environment=ENVIRONMENT,
        user=config.user,
        working_dir=project,
        mounts=mounts,
        tmpfs={"/tmp": tmpfs_options, HOME: tmpfs_options},
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        mem_limit=config.memory,
        memswap_limit=config.memory,
        nano_cpus=int(config.cpus * 1e9),
        pids_limit=config.pids,
        network_mode=config.network,
        # Without an init, the runtime as PID 1 ignores SIGTERM and a stop waits 10 s.
        init=True,
        ipc_mode="private",
        hostname="sandbox",
        stdin_open=True,
        tty=False,
    )


def remove(client: docker.DockerClient, container: str) -> None:
    """Removes a container, by id or name, with its anonymous volumes."""
    with contextlib.suppress(NotFound):  # already gone is what was wanted
        client.api.remove_container(container, force=True, v=True)


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    started = labels.get(f"{LABEL}.owner.start", "")
    return bool(started) and Path(f"/proc/{pid}").exists() and process_start(pid) != started


def prune(client: docker.DockerClient) -> list[str]:
    """Removes the containers whose owner is gone; returns their names."""
    removed = []
    listed = ours(client)
    channel.remove_orphan_folders({c.labels.get(f"{LABEL}.goal", "") for c in listed})
    for container in listed:
        if is_stale(container):
            try:
                remove(client, container.id)
            except DockerException:
                continue
            channel.remove_folders(container.labels.get(f"{LABEL}.goal", "") or container.name)
            removed.append(container.name)
    return removed + prune_volumes(client)


def prune_volumes(client: docker.DockerClient) -> list[str]:
    """Removes the volumes (workspace layers) whose owner is gone; returns their names."""
    removed: list[str] = []
    try:
        rows = client.api.volumes(filters={"label": LABEL}).get("Volumes") or []
    except DockerException:
        return removed
    for row in rows:
        if is_stale(Listed(row["Name"], row["Name"], "", row.get("Labels") or {})):
            try:
                client.api.remove_volume(row["Name"], force=True)
            except DockerException:
                continue
            removed.append(row["Name"])
    return removed
