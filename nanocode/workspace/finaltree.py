"""The project as a change set would leave it: its entries over the project on the host.

A path the change set names is what the change set says; any other is what the host has, read
without passing through a symlink the host has on the way (the change set never does either).
"""

import os
from pathlib import Path

from nanocode.workspace.changeset import Entry, State
from nanocode.workspace.trees import Node, join, node_of, read_plain


def _node(state: State) -> Node | None:
    if state.kind == "absent":
        return None
    return Node(state.kind if state.kind in ("file", "dir", "symlink") else "other", state.mode, state.target)


def final_states(entries: list[Entry]) -> dict[str, Entry | None]:
    """Each path the change set names, and the entry that says what it becomes (None: gone)."""
    final: dict[str, Entry | None] = {}
    for entry in entries:
        if entry.action == "rename":
            final.setdefault(entry.origin, None)
        if entry.new.kind == "absent":
            final.setdefault(entry.path, None)
    for entry in entries:
        if entry.new.kind != "absent":
            final[entry.path] = entry
    return final


class BaseTree:
    """The project on the host, never read through a symlink on the way."""

    def __init__(self, root: str):
        self.root = root

    def lstat(self, path: str) -> Node | None:
        full = self._reachable(path)
        if full is None:
            return None
        try:
            st = os.lstat(full)
        except OSError:
            return None
        return node_of(st, full)

    def read(self, path: str, limit: int) -> bytes | None:
        full = self._reachable(path)
        return None if full is None else read_plain(full, limit)

    def real_folder(self, path: str) -> str | None:
        """The host's folder at `path`, when it and every folder on the way are folders, not links."""
        full = self._reachable(join(path, "x"))
        if full is None:
            return None
        full = os.path.dirname(full)
        return full if os.path.isdir(full) and not os.path.islink(full) else None

    def _reachable(self, path: str) -> str | None:
        here = self.root
        for name in path.split("/")[:-1] if path else []:
            here = os.path.join(here, name)
            if not os.path.isdir(here) or os.path.islink(here):
                return None
        return os.path.join(self.root, path) if path else self.root


class FinalTree(BaseTree):
    def __init__(self, root: str, entries: list[Entry], folder: Path):
        super().__init__(root)
        self.final = final_states(entries)
        self.folder = folder

    def lstat(self, path: str) -> Node | None:
        if path in self.final:
            entry = self.final[path]
            return None if entry is None else _node(entry.new)
        return super().lstat(path)

    def read(self, path: str, limit: int) -> bytes | None:
        entry = self.final.get(path)
        if path in self.final and entry is None:
            return None
        if entry is not None and entry.new.kind != "file":
            return None
        if entry is not None and entry.blob:
            return read_plain(str(self.folder / entry.blob), limit)
        return super().read(path, limit)
