"""Overlay mode on an engine that sees the project: a kernel overlay, through a Docker volume.

The engine's local volume driver mounts `overlay` with the project as its lower folder and two
folders of nanocode's as upper and work. Nothing is copied: starting costs the same for any size
of project, and what the goal writes lands in the upper folder, which is the change set's source.
`userxattr` keeps overlayfs's marks (opaque folders) in the user's namespace of attributes, which
nanocode can read without being root.
"""

import contextlib
import os
import shutil
import stat
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.types import Mount
from requests import RequestException

from nanocode.errors import ConfigError
from nanocode.workspace import paths

OPAQUE = ("user.overlay.opaque", "trusted.overlay.opaque")


class HostUpper:
    """An upper folder on this machine."""

    def __init__(self, root: str):
        self.root = root

    def is_whiteout(self, path: str, st: os.stat_result) -> bool:
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

    def is_opaque(self, path: str) -> bool:
        for name in OPAQUE:
            with contextlib.suppress(OSError):
                if os.getxattr(path, name, follow_symlinks=False) == b"y":
                    return True
        return False


def layer_folder(goal: str) -> Path:
    return paths.layers_folder() / goal


def make_layer(project: str, goal: str) -> tuple[str, str]:
    """The upper and work folders of a goal; the upper's top looks like the project's."""
    if any(c in project for c in ",:\\"):
        raise ConfigError(f"--workspace overlay cannot overlay {project}: its path holds ',', ':' or '\\'")
    folder = layer_folder(goal)
    upper, work = folder / "upper", folder / "work"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    upper.mkdir()
    work.mkdir()
    st = os.stat(project)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    if os.getuid() == 0:
        os.chown(upper, st.st_uid, st.st_gid)
    return str(upper), str(work)


def overlay_options(lower: str, upper: str, work: str) -> dict[str, str]:
    return {
        "type": "overlay",
        "device": "overlay",
        "o": f"lowerdir={lower},upperdir={upper},workdir={work},userxattr",
    }


def create_volume(client: docker.DockerClient, name: str, options: dict[str, str], labels: dict[str, str]) -> None:
    try:
        client.api.create_volume(name=name, driver="local", driver_opts=options, labels=labels)
    except DockerException as exc:
        raise ConfigError(f"cannot create the overlay volume: {str(exc).splitlines()[0]}") from None


def volume_mount(name: str, project: str) -> Mount:
    return Mount(target=project, source=name, type="volume")


def remove_volume(client: docker.DockerClient, name: str) -> None:
    """Removes a volume; an engine gone away (its client fails to connect rather than raise a Docker
    error) leaves it to `sandbox prune` (its owner labels say whose)."""
    with contextlib.suppress(NotFound, DockerException, RequestException):
        client.api.remove_volume(name, force=True)


def remove_layer(folder: Path) -> None:
    """The kernel's work/work folder is root's, mode 000: empty, it can still be removed by its parent's owner."""
    with contextlib.suppress(OSError):
        os.rmdir(folder / "work" / "work")
    shutil.rmtree(folder, ignore_errors=True)
