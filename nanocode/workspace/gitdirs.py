"""Repositories found the way git finds them, whatever their name and wherever they are.

Host git, started in a folder, takes as its repository either a `.git` there (a folder, or a gitfile
naming one) or the folder itself when it passes git's own test of a git directory (setup.c,
`is_git_directory`):

- its `HEAD` is a symlink whose target starts with `refs/`, or a file whose first bytes are `ref:`,
  blanks, then `refs/`; or that starts with an object id (40 or 64 hexadecimal digits);
- and, in its common folder (the folder itself, or the one its `commondir` file names), `objects`
  and `refs` can be searched (`access(X_OK)`: a folder, or an executable file).

Invariant: a folder of the project that passes this test, asked of the project's tree (as it is,
or as a change set would leave it), is a repository here; one that fails it is not. Nothing else
(no name, no list) decides. A `commondir` that exists but cannot be read counts as a repository:
git stops there rather than look further, and nanocode would rather say too much than too little.

The walk (`find`) follows no symlink: each folder is opened through the handle of the one above it
and listed from that handle, and git's test reads what it needs in the project through handles too
(`HandleTree`). So it enters no folder outside the project, even one swapped for a symlink while it
runs; only where a repository's own `commondir` or links point out does the test look there, as git's.
"""

import os
import re
from dataclasses import dataclass, field

from nanocode.workspace import handles
from nanocode.workspace.trees import HEAD_LIMIT, HandleTree, Place, Tree, join, read_plain, resolve

# What git reads in a repository's own folder: never taken from the sandbox outside the real `.git`.
REPO_OWN = frozenset(
    {
        "HEAD", "config", "config.worktree", "commondir", "gitdir", "objects", "refs", "hooks", "info",
        "packed-refs", "index", "worktrees", "modules", "logs", "shallow", "reftable", "FETCH_HEAD",
        "ORIG_HEAD", "MERGE_HEAD", "description",
    }
)  # fmt: skip
OBJECT_ID = re.compile(rb"[0-9a-fA-F]{40}")
COMMONDIR_LIMIT = 4096


def is_dot_git(name: str) -> bool:
    """A name git reads as `.git` (on a filesystem that ignores case, `.GIT` is one too)."""
    return name.casefold() == ".git"


def is_git_directory(tree: Tree, folder: str) -> bool:
    """git's test of `folder` (relative to the project) as a git directory, asked of `tree`."""
    if not valid_head(tree, folder):
        return False
    common = common_dir(tree, folder)
    if common is None:
        return True
    return searchable(tree, below(common, "objects")) and searchable(tree, below(common, "refs"))


def valid_head(tree: Tree, folder: str) -> bool:
    node = tree.lstat(join(folder, "HEAD"))
    if node is None:
        return False
    if node.kind == "symlink":
        return node.target.startswith("refs/")  # git reads the link, and never follows it here
    data = tree.read(join(folder, "HEAD"), HEAD_LIMIT) if node.kind == "file" else None
    if data is None:
        return False
    data = data.split(b"\0")[0]
    if data.startswith(b"ref:") and data[4:].lstrip().startswith(b"refs/"):
        return True
    return OBJECT_ID.match(data) is not None


def common_dir(tree: Tree, folder: str) -> Place | None:
    """The folder whose `objects` and `refs` count; None when a `commondir` is there but unreadable."""
    place = resolve(tree, join(folder, "commondir"))
    if not _exists(tree, place):
        return Place(folder)
    data = _read(tree, place)
    if not data:
        return None
    text = os.fsdecode(data.rstrip(b"\r\n"))
    if os.path.isabs(text):
        return _absolute(tree, text)
    return resolve(tree, join(folder, text))


def _absolute(tree: Tree, path: str) -> Place:
    path = os.path.normpath(path)
    root = tree.root.rstrip("/")
    if path == root or path.startswith(root + "/"):
        return resolve(tree, path[len(root) + 1 :])
    return Place(path, inside=False)


def below(place: Place, name: str) -> Place:
    if place.broken:
        return place
    if not place.inside:
        return Place(os.path.join(place.path, name), inside=False)
    return Place(join(place.path, name))


def searchable(tree: Tree, place: Place) -> bool:
    """access(X_OK), as root has it: a folder, or a file with an execute bit; followed through links."""
    if place.broken:
        return False
    if not place.inside:
        return os.access(place.path, os.X_OK)
    landed = resolve(tree, place.path)
    if landed.broken:
        return False
    if not landed.inside:
        return os.access(landed.path, os.X_OK)
    node = tree.lstat(landed.path)
    if node is None:
        return False
    return node.kind == "dir" or bool(node.mode & 0o111)


def _exists(tree: Tree, place: Place) -> bool:
    if place.broken:
        return False
    if not place.inside:
        return os.path.exists(place.path)
    return tree.lstat(place.path) is not None


def _read(tree: Tree, place: Place) -> bytes | None:
    if not place.inside:
        return read_plain(place.path, COMMONDIR_LIMIT)
    return tree.read(place.path, COMMONDIR_LIMIT)


@dataclass
class Found:
    """What a walk of the project found: every `.git`; every other folder git takes for a repository
    ("" for the top); and every path named as a repository's own (`REPO_OWN`), repository or not."""

    dot_gits: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    owned: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # folders that could not be walked (not gone)


def _outside_dot_gits(path: str, item: os.DirEntry[str]) -> bool:
    return not is_dot_git(os.path.basename(path))


def find(project: str, unlock: float | None = None) -> Found:
    """Walks the project on the host through folder handles (`handles.walk`), following no symlink;
    nothing below a `.git` is walked. git's test is asked of a folder that holds a `HEAD` (in any
    case, as a file system that ignores case finds it), through handles too (`HandleTree`)."""
    found = Found()
    try:
        tree = HandleTree(project)
    except OSError:
        return found  # no project (removed while the goal ran): no repository in it
    with tree:
        unchecked = found.unchecked.append
        for folder, entries in handles.walk(project, _outside_dot_gits, lambda path, _: unchecked(path), unlock):
            names = [item.name for item in entries]
            found.dot_gits += [join(folder, name) for name in names if is_dot_git(name)]
            found.owned += [join(folder, name) for name in names if name in REPO_OWN]
            if any(name.casefold() == "head" for name in names) and is_git_directory(tree, folder):
                found.folders.append(folder)
    found.dot_gits.sort()
    found.owned.sort()
    found.folders.sort()
    return found
