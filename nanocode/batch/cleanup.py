"""What a batch removes from an engine after its goals: only what this batch process made there."""

import contextlib
import os
import socket
from typing import Any

from nanocode.batch.runner import wait_unused


def sweep_engine(client: Any) -> None:
    """Removes this batch's containers with their socket folders, their networks, then the volumes of
    workspaces that never closed."""
    from nanocode.sandbox import channel, container

    with contextlib.suppress(Exception):
        for listed in container.ours(client):
            if mine(listed.labels):
                container.remove(client, listed.id)
                channel.remove_folders(listed.labels.get("nanocode.goal", "") or listed.name)
    with contextlib.suppress(Exception):  # an allowlisted goal's network, once its containers are gone
        for network in client.api.networks(filters={"label": container.LABEL}):
            if mine(network.get("Labels") or {}):
                with contextlib.suppress(Exception):
                    client.api.remove_network(network["Id"])
    with contextlib.suppress(Exception):  # a layer whose workspace never closed: the volume at least
        for volume in client.api.volumes(filters={"label": container.LABEL}).get("Volumes") or []:
            if not mine(volume.get("Labels") or {}):
                continue
            wait_unused(client, volume["Name"])
            with contextlib.suppress(Exception):
                client.api.remove_volume(volume["Name"], force=True)


def mine(labels: dict[str, str]) -> bool:
    """Made by this process on this machine: another machine's batch may share the engine and the pid."""
    return (
        labels.get("nanocode.owner.pid") == str(os.getpid())
        and labels.get("nanocode.owner.host") == socket.gethostname()
    )
