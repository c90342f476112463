"""A change set: what a goal changed in its private layer, against the project as it was, kept whole.

It is computed from the layer's upper folder (only what the goal wrote, so its cost follows the
change, not the project) and the project on the host (the lower folder). What it keeps: a manifest
(JSON) with one entry per path, and the new contents, numbered, never named by the sandbox.
"""

import hashlib
import json
import os
import shutil
import stat
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from nanocode.workspace import paths
from nanocode.workspace.handles import Beyond, Tree

CHUNK = 1 << 20


class Upper(Protocol):
    """The goal's layer: a folder on the host, and what overlayfs marks in it."""

    root: str

    def is_whiteout(self, path: str, st: os.stat_result) -> bool: ...

    def is_opaque(self, path: str) -> bool: ...


@dataclass
class State:
    """What a path was (or is): a file, a symlink, a folder, or nothing."""

    kind: str  # "file", "symlink", "dir", "absent", "other"
    mode: int = 0
    sha256: str = ""
    target: str = ""  # of a symlink

    @classmethod
    def of(cls, path: str) -> "State":
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return cls("absent")
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return cls("symlink", target=os.readlink(path))
        if stat.S_ISDIR(st.st_mode):
            return cls("dir", mode)
        if stat.S_ISREG(st.st_mode):
            return cls("file", mode, digest(path))
        return cls("other")

    @classmethod
    def at(cls, tree: Tree, path: str) -> "State":
        """What `path` is in the tree, found without following a symlink (`Beyond` if one is on the way)."""
        st = tree.lstat(path)
        if st is None:
            return cls("absent")
        if stat.S_ISLNK(st.st_mode):
            with tree.at(path) as (folder, name):
                return cls("symlink", target=os.readlink(name, dir_fd=folder))
        if stat.S_ISDIR(st.st_mode):
            return cls("dir", stat.S_IMODE(st.st_mode))
        if stat.S_ISREG(st.st_mode):
            with tree.open_file(path) as fd:
                return cls("file", stat.S_IMODE(st.st_mode), digest_fd(fd))
        return cls("other")


@dataclass
class Entry:
    path: str
    action: str  # "add", "modify", "delete", "rename", "mode"
    new: State
    base: State
    origin: str = ""  # of a rename
    blob: str = ""  # the new content, under files/
    binary: bool = False
    flagged: bool = False
    changed_during_goal: bool = False
    lines: tuple[int, int] = (0, 0)  # added, removed (text files)

    def origin_gone(self) -> "Entry":
        """A rename's other half: the delete of its origin, for when its new path is left out."""
        gone = Entry(self.origin, "delete", State("absent"), self.base, flagged=self.flagged)
        gone.changed_during_goal = self.changed_during_goal
        return gone


@dataclass
class Manifest:
    id: str
    goal: str
    project: str
    started: float  # the goal's start (epoch seconds): the baseline of conflicts
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    outcome: str = ""
    entries: list[Entry] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # paths never applied (git, secrets, special files)
    series: list[str] = field(default_factory=list)  # the goal's commits, one line each (gitseries)
    committed: list[str] = field(default_factory=list)  # the paths those commits change
    flagged_commits: list[str] = field(default_factory=list)  # flagged paths the commits touch
    notes: list[str] = field(default_factory=list)  # what the user is told about the change set
    git: dict[str, str] = field(default_factory=dict)  # branch, start, tip
    applied: str = ""

    def drop_commits(self) -> None:
        """The goal's commits are not applied (their changes still are, as uncommitted work)."""
        self.series, self.committed, self.flagged_commits = [], [], []
        for key in ("tip", "bundle", "rewritten"):
            self.git.pop(key, None)

    @property
    def flagged(self) -> list[str]:
        entries = [e.path for e in self.entries if e.flagged]
        return entries + [p for p in self.flagged_commits if p not in entries]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data: dict[str, Any] = json.loads(text)
        entries = [
            Entry(**{**e, "new": State(**e["new"]), "base": State(**e["base"]), "lines": tuple(e["lines"])})
            for e in data.pop("entries")
        ]
        return cls(**data, entries=entries)


def digest(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return digest_fd(fd)
    finally:
        os.close(fd)


def digest_fd(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, CHUNK):
        h.update(chunk)
    return h.hexdigest()


def executable(mode: int) -> bool:
    return bool(mode & 0o100)


def git_mode(goal: int, base: State) -> int:
    """A file's mode as git has it: 0755 or 0644 by its executable bit. A file whose executable bit the
    goal left alone keeps the project's mode, less any setuid, setgid, sticky or group/world write bit."""
    if base.kind == "file" and executable(base.mode) == executable(goal):
        return base.mode & 0o755
    return 0o755 if executable(goal) else 0o644


def is_binary(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8000)
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 3  # a character cut at the end of the sample is fine
    return False


class Builder:
    """Walks the upper folder against the project, and fills a manifest and its files/ folder."""

    def __init__(self, upper: Upper, project: str, manifest: Manifest, folder: Path):
        self.upper = upper
        self.project = project
        self.manifest = manifest
        self.files = folder / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._blobs = 0

    def build(self) -> Manifest:
        with Tree(self.project) as self.tree:
            self._walk("")
        self._find_renames()
        self.manifest.entries.sort(key=lambda e: e.path)
        return self.manifest

    def _walk(self, folder: str) -> None:
        here = os.path.join(self.upper.root, folder)
        names = set()
        for item in sorted(os.scandir(here), key=lambda d: d.name):
            names.add(item.name)
            self._one(f"{folder}/{item.name}" if folder else item.name, item.path)
        if folder and self.upper.is_opaque(here):
            # Re-created in the goal: whatever the project has there and the layer does not is gone.
            for name in self._listed(folder):
                if name not in names:
                    self._deleted(f"{folder}/{name}")

    def _one(self, path: str, upper: str) -> None:
        st = os.lstat(upper)
        if not paths.is_safe_name(path):
            self.manifest.ignored.append(path)
            return
        if self.upper.is_whiteout(upper, st):
            self._deleted(path)
            return
        base = self._base(path)
        if stat.S_ISDIR(st.st_mode):
            if base.kind != "dir":  # a folder's own mode is not kept (git has none): a new one is 0755
                if base.kind != "absent":
                    self._deleted(path)
                self._add(path, State("dir", 0o755), State("absent"))
            self._walk(path)
            return
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            self.manifest.ignored.append(path)
            return
        if base.kind == "dir":
            self._deleted(path)
            base = State("absent")
        new = State.of(upper)
        if new.kind == "file":
            new.mode = git_mode(new.mode, base)
        if base.kind == "absent":
            self._add(path, new, base, "add", upper)
        elif (new.kind, new.sha256, new.target) != (base.kind, base.sha256, base.target):
            self._add(path, new, base, "modify", upper)
        elif new.kind == "file" and executable(new.mode) != executable(base.mode):
            self._add(path, new, base, "mode")

    def _base(self, path: str) -> State:
        """What the project has at `path`: nothing, when a folder on the way is a symlink (applying
        never reaches through one)."""
        try:
            return State.at(self.tree, path)
        except Beyond:
            return State("absent")

    def _listed(self, folder: str) -> list[str]:
        """The names in the project's `folder` (none when it is not a folder reached without a symlink)."""
        try:
            fd = self.tree.folder(folder)
        except (Beyond, FileNotFoundError):
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def _deleted(self, path: str) -> None:
        """The project's `path` is gone, with all that is below it."""
        if not paths.is_safe_name(path):
            self.manifest.ignored.append(path)
            return
        base = self._base(path)
        if base.kind == "absent":
            return
        if base.kind == "dir":
            for name in self._listed(path):
                self._deleted(f"{path}/{name}")
        self._add(path, State("absent"), base, "delete")

    def _add(self, path: str, new: State, base: State, action: str = "add", source: str = "") -> None:
        entry = Entry(path, action, new, base, flagged=paths.is_flagged(path))
        entry.changed_during_goal = self._changed_during_goal(path)
        if source and new.kind == "file":
            entry.blob = self._keep(source)
            entry.binary = is_binary(source)
        self.manifest.entries.append(entry)

    def _changed_during_goal(self, path: str) -> bool:
        try:
            st = self.tree.lstat(path)
        except OSError:
            return False
        return st is not None and st.st_ctime > self.manifest.started

    def _keep(self, source: str) -> str:
        self._blobs += 1
        name = str(self._blobs)
        target = self.files / name
        try:
            os.link(source, target)  # the layer goes with the goal: a link costs nothing
        except OSError:
            shutil.copyfile(source, target)
        return f"files/{name}"

    def _find_renames(self) -> None:
        """A file deleted and one added with the same (non-empty) content: a rename."""
        deleted = {e.base.sha256: e for e in self.manifest.entries if e.action == "delete" and e.base.kind == "file"}
        for entry in self.manifest.entries:
            gone = deleted.get(entry.new.sha256) if entry.action == "add" and entry.new.kind == "file" else None
            if gone is None or gone.base.sha256 == hashlib.sha256(b"").hexdigest():
                continue
            del deleted[entry.new.sha256]
            self.manifest.entries.remove(gone)
            entry.action, entry.origin = "rename", gone.path
            entry.base = gone.base
            entry.changed_during_goal = entry.changed_during_goal or gone.changed_during_goal
