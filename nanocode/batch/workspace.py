"""A goal's workspace: a private copy of the project where the goal works, and its change set at the end.

This is the seam where the overlay workspaces (a copy-on-write layer per goal) plug in; the copy
keeps the same contract: the project is untouched while goals run, and each goal's changes come
back as a change set that `nanocode batch apply` applies.
"""

import difflib
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from nanocode.sandbox.protect import is_secret

SKIPPED = {".git"}  # never part of a change set: host git runs what its files name


@dataclass
class Change:
    path: str
    change: str  # added, modified, deleted
    base: str | None  # sha256 of the project's file when the goal started; None if there was none
    mode: int = 0o644
    link: str | None = None  # a symlink's target


class CopyWorkspace:
    """The project copied into a folder of the batch; the goal works there."""

    def __init__(self, project: Path, root: Path):
        self.project = project
        self.path = root
        if root.exists():
            remove_tree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(project, root, symlinks=True, ignore=_ignored)

    def changes(self, into: Path) -> list[str]:
        """Writes the change set (changes.json, files/, changes.diff) into `into`; returns the paths changed."""
        found = compare(self.project, self.path)
        into.mkdir(parents=True, exist_ok=True)
        files = into / "files"
        diff = []
        for change in found:
            if change.change != "deleted" and change.link is None:
                target = files / change.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / change.path, target)
            diff.append(_diff(self.project, self.path, change))
        (into / "changes.json").write_text(json.dumps([c.__dict__ for c in found], indent=1))
        (into / "changes.diff").write_text("".join(diff), errors="backslashreplace")
        return [c.path for c in found]

    def remove(self) -> None:
        remove_tree(self.path)


def compare(base: Path, work: Path) -> list[Change]:
    before, after = _listing(base), _listing(work)
    changes = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if new is None:
            changes.append(Change(path, "deleted", _digest(base / path)))
        elif old is None:
            changes.append(_changed(work, path, "added", None, new))
        elif _differs(base / path, work / path, old, new):
            changes.append(_changed(work, path, "modified", _digest(base / path), new))
    return changes


def _changed(work: Path, path: str, kind: str, base: str | None, st: os.stat_result) -> Change:
    link = os.readlink(work / path) if stat.S_ISLNK(st.st_mode) else None
    return Change(path, kind, base, 0o755 if st.st_mode & 0o100 else 0o644, link)


def _listing(root: Path) -> dict[str, os.stat_result]:
    """Regular files and symlinks under root, by relative path; .git and secrets left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not os.path.islink(os.path.join(folder, d))]
        links = [d for d in os.listdir(folder) if os.path.islink(os.path.join(folder, d))]
        for name in set(files) | set(links):
            if name in SKIPPED or is_secret(name):
                continue
            full = os.path.join(folder, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                found[os.path.relpath(full, root)] = st
    return found


def _differs(a: Path, b: Path, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or (sa.st_mode & 0o100) != (sb.st_mode & 0o100):
        return True
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) != os.readlink(b)
    if sa.st_size != sb.st_size:
        return True
    if sa.st_mtime_ns == sb.st_mtime_ns:
        return False  # the copy keeps times: a file untouched since has them still
    return a.read_bytes() != b.read_bytes()


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest_or_none(path: Path) -> str | None:
    return _digest(path) if path.is_symlink() or path.is_file() else None


def _diff(base: Path, work: Path, change: Change) -> str:
    old = _text(base / change.path) if change.change != "added" else []
    new = _text(work / change.path) if change.change != "deleted" else []
    if old is None or new is None:
        return f"Binary files a/{change.path} and b/{change.path} differ\n"
    a = "/dev/null" if change.change == "added" else f"a/{change.path}"
    b = "/dev/null" if change.change == "deleted" else f"b/{change.path}"
    return "".join(difflib.unified_diff(old, new, a, b))


def _text(path: Path) -> list[str] | None:
    if path.is_symlink():
        return [f"-> {os.readlink(path)}\n"]
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode(errors="replace").splitlines(keepends=True)


def _ignored(folder: str, names: list[str]) -> set[str]:
    return {name for name in names if is_secret(name)}


def remove_tree(path: Path) -> None:
    """Removes a folder the goal wrote, whatever modes it left (never following a link)."""
    if path.is_symlink() or not path.exists():
        path.unlink(missing_ok=True)
        return

    def writable(function, name, info):  # type: ignore[no-untyped-def]
        os.chmod(os.path.dirname(name), 0o700)
        function(name)

    shutil.rmtree(path, onerror=writable)
