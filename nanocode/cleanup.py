"""What goals of a killed nanocode left behind, removed: at every start, and by `nanocode sandbox prune`."""

from collections.abc import Callable
from dataclasses import dataclass

import docker

from nanocode.egress.goal import remove_orphan_files
from nanocode.sandbox import container
from nanocode.workspace import workspace


@dataclass
class Removed:
    containers: list[str]
    networks: list[str]
    volumes: list[str]

    def names(self) -> list[str]:
        return self.containers + self.networks + self.volumes

    def lines(self) -> list[str]:
        """One line for each thing removed, to tell the user at a start."""
        kinds = (("sandbox container", self.containers), ("network", self.networks), ("volume", self.volumes))
        return [f"removed stale {kind} {name}" for kind, names in kinds for name in names]

    def summary(self) -> str:
        counted = [_count(self.containers, "container"), _count(self.networks, "network")]
        return f"removed {', '.join(counted)} and {_count(self.volumes, 'volume')} of goals whose owner is gone"


def _count(names: list[str], kind: str) -> str:
    return f"{len(names)} {kind}{'' if len(names) == 1 else 's'}"


def remove_leftovers(
    client: docker.DockerClient, note: Callable[[str], None], rule: container.Prune | None = None
) -> Removed:
    """Removes the dead containers (stopped: their lease ended with their owner) and the networks and
    volumes none uses (containers first: the others are theirs), finishes their workspaces (a git folder
    planted in bind mode moved aside, an overlay's layer removed) and removes their networks' hosts
    files. `note` hears of what stays or was moved. A running container is never removed here but as
    `rule` says (sandbox prune --stale)."""
    rule = rule or container.Prune()
    removed = Removed(
        container.prune_containers(client, note, rule),
        container.prune_networks(client, rule),
        container.prune_volumes(client, rule),
    )
    workspace.recover(client, note)
    remove_orphan_files(client)
    return removed
