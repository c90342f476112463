"""Where workspaces keep their state: change sets, layers, the journal; and which names are never taken."""

import os
from pathlib import Path

from nanocode.sandbox import protect

# Files that host tools run or read by themselves: a change to one is flagged for review.
FLAGGED_NAMES = (
    ".envrc",
    ".gitmodules",
    ".gitattributes",
    ".pre-commit-config.yaml",
    "Makefile",
    "GNUmakefile",
    "makefile",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "conftest.py",
)
FLAGGED_FOLDERS = (".vscode", ".idea", ".devcontainer")


def state() -> Path:
    root = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(root) / "nanocode"


def changes_folder() -> Path:
    return state() / "changes"


def layers_folder() -> Path:
    return state() / "layers"


def journal_folder() -> Path:
    return state() / "journal"


def parts(path: str) -> list[str]:
    return path.split("/")


def is_git(path: str) -> bool:
    """Anything under a .git (a folder or a gitfile), at any depth."""
    return ".git" in parts(path)


def is_secret(path: str) -> bool:
    return protect.is_secret(parts(path)[-1])


def is_flagged(path: str) -> bool:
    names = parts(path)
    name = names[-1]
    if name in FLAGGED_NAMES or (name.startswith(".git") and name != ".git"):
        return True
    if any(folder in FLAGGED_FOLDERS for folder in names[:-1]):
        return True
    return "/".join(names[:2]) == ".github/workflows" and len(names) > 2


def is_safe_name(path: str) -> bool:
    """A relative path inside the project, as the sandbox may name it: no way out, no git, no secret."""
    if not path or path.startswith("/") or "\x00" in path:
        return False
    names = parts(path)
    return all(n not in ("", ".", "..") for n in names) and not is_git(path) and not is_secret(path)
