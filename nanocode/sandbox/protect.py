"""What in the project the sandbox may not read: its secrets."""

import os
from pathlib import Path

from docker.types import Mount

# Files that hold secrets: inside the sandbox they read as empty.
SECRET_NAMES = (".env", ".envrc", ".netrc")
NOT_SECRET = (".example", ".sample", ".template", ".dist")


def is_secret(name: str) -> bool:
    return (name in SECRET_NAMES or name.startswith(".env.")) and not name.endswith(NOT_SECRET)


def empty_file() -> str:
    """A read-only empty file to mount over secrets (a regular file, unlike /dev/null)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    path = Path(state) / "nanocode" / "empty"
    if not path.is_file() or path.stat().st_size:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        path.chmod(0o444)
    return str(path)


def project_mounts(project: str, cwd: str | None = None) -> list[Mount]:
    """The project bind-mounted, its secrets masked: bind mode's sharing, without its git protection
    (nanocode.workspace adds that)."""
    shared = Mount(target=project, source=project, type="bind", read_only=False)
    return [shared, *secret_mounts(project, cwd or os.getcwd())]


def secret_mounts(project: str, cwd: str) -> list[Mount]:
    """An empty read-only file over each secret at the top of the project and in the folders from the
    current one up to it."""
    folders = {project}
    here = os.path.abspath(cwd)
    while here.startswith(project + os.sep):
        folders.add(here)
        here = os.path.dirname(here)
    mounts = []
    for folder in sorted(folders):
        for entry in os.scandir(folder):
            if is_secret(entry.name) and entry.is_file():
                mounts.append(Mount(target=entry.path, source=empty_file(), type="bind", read_only=True))
    return mounts
