"""Flagging in bind mode, where the goal changed the project itself: what host tools run, changed.

The same rule as a change set's (`flagging`), asked of the project on the host when the goal ends:
every path whose inode changed while the goal ran (its ctime: content, mode, a new name), and every
flagged path there at the start that is gone, is flagged when its path, or a name it is reached by
through a symlink, is flagged; a changed symlink whose target is flagged or leaves the project, and
a changed executable file, are flagged too.
"""

import contextlib
import os
import stat

from nanocode.workspace import flagging, paths
from nanocode.workspace.gitdirs import is_dot_git
from nanocode.workspace.handles import Tree
from nanocode.workspace.trees import HostTree, Place, join, listing, resolve

QUARANTINE = ".nanocode-quarantine"
FOLDER = os.stat_result((0o040755, 0, 0, 0, 0, 0, 0, 0, 0, 0))
OTHER = os.stat_result((0, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def flagged_names(project: str) -> list[str]:
    """The paths flagged by name in the project now (kept at the start, to see what goes)."""
    return [path for path, _ in _walk(project, stat=False) if paths.is_flagged(path)]


def changed(project: str, since: float, before: list[str]) -> list[str]:
    """The flagged paths that changed since `since` (epoch seconds), or that were there and are gone."""
    tree = HostTree(project)
    seen = list(_walk(project))
    links = {path: resolve(tree, path) for path, st in seen if _is_link(st)}
    new = [(path, st) for path, st in seen if st.st_ctime >= since]
    found = [path for path, st in new if _runs(path, st, links)]
    found += [path for path in before if not os.path.lexists(os.path.join(project, path))]
    return sorted(set(found))


def _runs(path: str, st: os.stat_result, links: dict[str, Place]) -> bool:
    if flagging.runs(path, links):
        return True
    if _is_link(st):
        landed = links[path]
        return not landed.inside or (not landed.broken and flagging.runs(landed.path, links))
    return _is_file(st) and bool(st.st_mode & 0o111)


def _is_link(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o120000


def _kind(item: os.DirEntry[str]) -> os.stat_result:
    return FOLDER if item.is_dir(follow_symlinks=False) else OTHER


def _is_folder(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o040000


def _is_file(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


def _skipped(name: str) -> bool:
    """A `.git`, and what bind mode moved aside (its own warning names it)."""
    return is_dot_git(name) or QUARANTINE in name


def _walk(project: str, stat: bool = True) -> list[tuple[str, os.stat_result]]:
    """Every path below the project and its lstat (when `stat`: else a folder's or not), following no
    symlink, nothing below a `.git`."""
    found = []
    pending = [""]
    while pending:
        folder = pending.pop()
        items = listing(os.path.join(project, folder) if folder else project)
        listed = [(join(folder, item.name), item) for item in items if not _skipped(item.name)]
        for path, item in listed:
            try:
                st = item.stat(follow_symlinks=False) if stat else _kind(item)
            except OSError:
                continue
            found.append((path, st))
            if _is_folder(st):
                pending.append(path)
    return found


SPECIAL = 0o6000  # setuid, setgid: a file that runs as its owner (root, when nanocode runs as root)
OTHERS_WRITE = 0o002  # another user of the machine could change what you run


def unset_special(project: str, since: float) -> list[str]:
    """Takes the setuid, setgid and world-write bits off every file (and the world-write bit off every
    folder) the goal changed: in bind mode the sandbox writes as the user, and such a bit would let
    anyone who can reach the project run its code as them, or change it. Each path is reached
    through folder handles, never through a symlink. Returns the paths."""
    found = [(p, st) for p, st in _walk(project) if st.st_ctime >= since and st.st_mode & _unsafe(st)]
    done = []
    with Tree(project) as tree:
        for path, st in found:
            with contextlib.suppress(OSError):
                fd = tree.folder(path) if _is_folder(st) else _open_file(tree, path)
                try:
                    os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~_unsafe(st))
                finally:
                    os.close(fd)
                done.append(path)
    return done


def _unsafe(st: os.stat_result) -> int:
    return SPECIAL | OTHERS_WRITE if _is_file(st) else OTHERS_WRITE if _is_folder(st) else 0


def _open_file(tree: Tree, path: str) -> int:
    with tree.open_file(path) as fd:
        return os.dup(fd)
