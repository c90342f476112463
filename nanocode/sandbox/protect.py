"""What in the project the sandbox may not read or change: secrets, and what git on the host runs by itself."""

import os
from pathlib import Path

from docker.types import Mount

# Files that hold secrets: inside the sandbox they read as empty.
SECRET_NAMES = (".env", ".envrc", ".netrc")
NOT_SECRET = (".example", ".sample", ".template", ".dist")
# Where git on the host finds commands to run (hooks, config, the config of submodules and
# worktrees, another git folder's config through commondir): read-only inside.
GIT_READ_ONLY = ("hooks", "config", "config.worktree", "commondir", "modules", "worktrees")
# Of those, the files whose mere appearance would make host git read a config of the sandbox's.
GIT_MUST_NOT_APPEAR = ("commondir", "config.worktree")
QUARANTINE = ".planted-in-sandbox"


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


def protected_mounts(project: str, cwd: str) -> list[Mount]:
    """Mounts over the project's secret files and git's own files.

    Secrets are looked for at the top of the project and in the folders from the
    current one up to it, where the .env nanocode read its settings from would be.
    The .git folder is a mount point of its own, so that it cannot be renamed and
    replaced by one whose config the host would then read.
    """
    mounts = secret_mounts(project, cwd)
    git = os.path.join(project, ".git")
    if os.path.isdir(git) and not os.path.islink(git):
        os.makedirs(os.path.join(git, "hooks"), exist_ok=True)  # as git init would: else the sandbox could
        mounts.append(Mount(target=git, source=git, type="bind", read_only=False))
        for name in GIT_READ_ONLY:
            path = os.path.join(git, name)
            if os.path.exists(path) and not os.path.islink(path):
                mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    return mounts


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


def watched(project: str) -> list[str]:
    """The git files that do not exist now and must not come into being during the goal."""
    git = os.path.join(project, ".git")
    if not os.path.isdir(git):
        return []
    return [path for path in (os.path.join(git, name) for name in GIT_MUST_NOT_APPEAR) if not os.path.lexists(path)]


def quarantine(paths: list[str]) -> list[str]:
    """Moves aside those of the watched files that appeared; returns where they went."""
    moved = []
    for path in paths:
        if os.path.lexists(path):
            target = path + QUARANTINE
            os.replace(path, target)
            moved.append(target)
    return moved
