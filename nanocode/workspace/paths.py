"""Where workspaces keep their state: change sets, layers, the journal; and which names are never taken."""

import os
from pathlib import Path

from nanocode.sandbox import protect

# What host tools run or read by themselves (`make`, `npm`, `pip`, `pytest`, `tox`, `direnv`, an
# editor, CI, git, Python at start-up...): a change to one is flagged for review. Compared without
# case, at any depth: a file system that ignores case runs `MAKEFILE` as `make` reads `Makefile`.
FLAGGED_NAMES = frozenset(
    {
        ".envrc", ".tool-versions", ".mise.toml", "mise.toml", ".mise.local.toml", "mise.local.toml",
        ".gitlab-ci.yml", ".pre-commit-config.yaml", ".pre-commit-hooks.yaml", "makefile", "gnumakefile",
        "justfile", ".justfile", "taskfile.yml", "taskfile.yaml", "taskfile.dist.yml", "taskfile.dist.yaml",
        "package.json", ".npmrc", ".pnpmfile.cjs", "pyproject.toml", "setup.py", "setup.cfg", "tox.ini",
        "noxfile.py", "conftest.py", "sitecustomize.py", "usercustomize.py", "build.rs", ".pdbrc",
        "rakefile", "gemfile", ".bazelrc", "build.gradle", "gradlew",
    }
)  # fmt: skip
FLAGGED_PREFIXES = (".git", ".yarnrc")  # every .gitignore, .gitattributes, .githooks/, ...; .yarnrc.yml
FLAGGED_SUFFIXES = (".pth",)  # Python runs their `import` lines at start-up
# Folders whose every file tools read: an editor's tasks and settings, a dev container, CI, mise.
FLAGGED_FOLDERS = frozenset({".vscode", ".idea", ".devcontainer", ".github", ".mise", ".husky"})


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
    """Anything under a .git (a folder or a gitfile), at any depth, in any case (a file system that
    ignores case reads `.GIT` as `.git`)."""
    return any(name.casefold() == ".git" for name in parts(path))


def is_secret(path: str) -> bool:
    return protect.is_secret(parts(path)[-1])


def is_flagged(path: str) -> bool:
    """Whether host tools run or read `path` by themselves, by its names alone (case ignored): a
    flagged folder anywhere on the way, or the folder itself; `.cargo/config*`; a flagged file name."""
    names = [n.casefold() for n in parts(path)]
    for i, name in enumerate(names):
        if name in FLAGGED_FOLDERS or name.startswith(FLAGGED_PREFIXES):
            return True
        if name == ".cargo" and i + 1 < len(names) and names[i + 1].startswith("config"):
            return True
    last = names[-1]
    return last in FLAGGED_NAMES or last.endswith(FLAGGED_SUFFIXES)


def is_safe_name(path: str) -> bool:
    """A relative path inside the project, as the sandbox may name it: no way out, no git, no secret."""
    if not path or path.startswith("/") or "\x00" in path:
        return False
    names = parts(path)
    return all(n not in ("", ".", "..") for n in names) and not is_git(path) and not is_secret(path)
