"""Flagging in bind mode, where the goal changed the project itself: what host tools run, changed.

The same rule as a change set's (`flagging`), asked of the project on the host when the goal ends:
every path whose inode changed while the goal ran (its ctime: content, mode, a new name), and every
flagged path there at the start that is gone, is flagged when its path, or a name it is reached by
through a symlink, is flagged; a changed symlink whose target is flagged or leaves the project, and
a changed executable file, are flagged too.

Invariant: the walk enters every folder below the project, `.git`s included, but the `.git`s that
were there at the start, each while it is at its path and the very inode it was (`kept`: mounted
read-only while the goal ran, so nothing in them is the goal's); whatever their name, the `.git`s
the goal made are walked, where they are or where nanocode moved them, and so is every `.git`
inside those; so is one made where a kept one was, its folder renamed by the sandbox. A folder the
walk cannot check (for any reason but that it is gone) is said in a warning line, never skipped in
silence.

Invariant: the warning leaves out only what nanocode itself moved aside in this goal (`Aside`): the
exact paths it moved repositories to, each still the very inode it was right after the move (device
and inode), and what is below them; their own warning names them. No name decides: a folder the goal
names as nanocode names its quarantine, and what it holds, is walked and flagged as any other.
"""

import contextlib
import os
import stat
from collections.abc import Callable, Iterable

from nanocode import display
from nanocode.workspace import flagging, handles, paths
from nanocode.workspace.handles import Tree
from nanocode.workspace.trees import HostTree, Place, join, resolve

FOLDER = os.stat_result((0o040755, 0, 0, 0, 0, 0, 0, 0, 0, 0))
OTHER = os.stat_result((0, 0, 0, 0, 0, 0, 0, 0, 0, 0))


Seen = list[tuple[str, os.stat_result]]  # what `walk` found: each path and its lstat
Aside = dict[str, tuple[int, int]]  # what nanocode moved aside in this goal: its path, (device, inode)
Kept = dict[str, tuple[int, int]]  # the `.git`s there at the start: path, (device, inode)
Warn = Callable[[str], None]  # told one line for each folder the walk could not check


def kept(project: str, gits: Iterable[str]) -> Kept:
    """The `.git`s of the start-of-goal snapshot (`bind.Snapshot.gits`'s keys; a key ending in "/"
    is a folder that is a repository, whose files the walk reads as any other's), each by its path
    and identity (device and inode), taken through folder handles: the only paths the walk leaves
    out, and only while they are that very inode (the sandbox may rename the folder that holds one
    and make another of that name)."""
    return _identities(project, [path for path in gits if not path.endswith("/")])


def kept_of(entry: object) -> Kept:
    """`kept` as a journal holds it (JSON: lists for tuples); nothing when it is not there."""
    if not isinstance(entry, dict):
        return {}
    pairs = [(str(path), ident) for path, ident in entry.items() if isinstance(ident, list) and len(ident) == 2]
    return {path: (int(ident[0]), int(ident[1])) for path, ident in pairs}


def flagged_names(project: str, keep: Kept, warn: Warn) -> list[str]:
    """The paths flagged by name in the project now (kept at the start, to see what goes)."""
    return [path for path, _ in walk(project, keep, warn, stat=False) if paths.is_flagged(path)]


def own(project: str, targets: list[str]) -> Aside:
    """What nanocode moved aside (`targets`: the paths `bind.quarantine` moved things to), each by its
    identity, taken through folder handles as soon as it is there (the sandbox is gone by then)."""
    return _identities(project, [os.path.relpath(target, project) for target in targets])


def _identities(project: str, paths: list[str]) -> dict[str, tuple[int, int]]:
    """Each path's (device, inode), read through folder handles; one not there is left out."""
    found: dict[str, tuple[int, int]] = {}
    if not paths:
        return found  # nothing to open (the project itself may be gone)
    with Tree(project) as tree:
        for path in paths:
            with contextlib.suppress(OSError):
                st = tree.lstat(path)
                if st is not None:
                    found[path] = (st.st_dev, st.st_ino)
    return found


def changed(project: str, since: float, before: list[str], seen: Seen, aside: Aside | None = None) -> list[str]:
    """The flagged paths that changed since `since` (epoch seconds), or that were there and are gone;
    `seen`: the project's `walk` (`unset_special` leaves of each path what this reads as it was: its
    kind, its execute bits, a change time past `since`); `aside`: what nanocode
    moved aside in this goal, left out. A path of `before` is gone when the walk, which follows no
    symlink, no longer finds it: one now reached only through a symlink is another file."""
    tree = HostTree(project)
    there = {path for path, _ in seen}
    seen = _not_aside(seen, aside or {})
    links = {path: resolve(tree, path) for path, st in seen if _is_link(st)}
    new = [(path, st) for path, st in seen if st.st_ctime >= since]
    found = [path for path, st in new if _runs(path, st, links)]
    found += [path for path in before if path not in there]
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


def _ident(item: os.DirEntry[str]) -> tuple[int, int] | None:
    try:
        st = item.stat(follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_folder(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o040000


def _is_file(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


def _not_aside(seen: Seen, aside: Aside) -> Seen:
    """`seen` but for what nanocode moved aside: a path it moved something to that is still that very
    inode, and what is below it. A path with the name but not the inode (or the inode, a file's hard
    link, under another name) stays."""
    tops = [path + "/" for path, st in seen if aside.get(path) == (st.st_dev, st.st_ino)]
    if not tops:
        return seen
    return [(path, st) for path, st in seen if not any((path + "/").startswith(top) for top in tops)]


def walk(project: str, keep: Kept, warn: Warn, stat: bool = True, unlock: float | None = None) -> Seen:
    """Every path below the project and its lstat (when `stat`: else a folder's or not), but the
    `.git`s of `keep` (`kept`: by path and identity) and what is below them. Each folder is opened
    through the handle of the folder that holds it, never through a symlink, and what it holds is
    asked of its handle (`handles.walk`): no path string is resolved again, so no symlink, old or
    new, leads the walk elsewhere. `warn` is told of each folder or entry that could not be checked.
    A folder the goal locked (changed at `unlock` or later) is opened to the user; one they locked is not."""
    found: Seen = []

    def failed(path: str, exc: OSError) -> None:
        warn(
            f"warning: could not check {display.name(path or '.')} for setuid files and flagged changes: {exc.strerror}"
        )

    def left_out(path: str, item: os.DirEntry[str]) -> bool:
        return path in keep and _ident(item) == keep[path]

    for folder, entries in handles.walk(project, lambda path, item: not left_out(path, item), failed, unlock):
        for item in entries:
            path = join(folder, item.name)
            if left_out(path, item):
                continue
            try:
                found.append((path, item.stat(follow_symlinks=False) if stat else _kind(item)))
            except FileNotFoundError:
                pass  # gone since it was listed
            except OSError as exc:
                failed(path, exc)
    return found


SPECIAL = 0o6000  # setuid, setgid: a file that runs as its owner (root, when nanocode runs as root)
OTHERS_WRITE = 0o002  # another user of the machine could change what you run


def unset_special(project: str, since: float, seen: Seen) -> list[str]:
    """Takes the setuid, setgid and world-write bits off every file (and the world-write bit off every
    folder) the goal changed: in bind mode the sandbox writes as the user, and such a bit would let
    anyone who can reach the project run its code as them, or change it. Each path is reached
    through folder handles, never through a symlink. `seen`: the project's `walk`. Returns the paths."""
    found = [(p, st) for p, st in seen if st.st_ctime >= since and st.st_mode & _unsafe(st)]
    if not found:
        return []  # nothing to open (the project itself may be gone)
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
