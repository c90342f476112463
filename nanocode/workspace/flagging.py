"""Flagged by what runs: which changes of a change set a person should read before host tools run.

Invariant: a change is flagged when, once applied, a host tool would run or read it by itself:
- its path is flagged by name (`paths.is_flagged`: case ignored, at any depth);
- it is reached through a symlink whose own path is flagged (`.vscode` -> `cfg` flags
  `cfg/settings.json`): the resolved address inside the project is what counts, not the spelling;
- it is a symlink whose target is flagged, or leaves the project;
- it makes a file executable that was not (a new file included);
- and the commits bring a flagged path (a `Makefile` added only by a commit is flagged too).

Symlinks are read in the project as the change set would leave it: every one the change set makes,
and every one the host has in the project's top folder and in the folders on the way to a change.
"""

import os
from pathlib import Path

from nanocode.workspace import paths, touched
from nanocode.workspace.changeset import Entry, Manifest
from nanocode.workspace.finaltree import FinalTree
from nanocode.workspace.trees import Place, join, resolve

DEPTH = 4  # links through links, followed this far back


def newly_executable(entry: Entry) -> bool:
    if entry.new.kind != "file" or not entry.new.mode & 0o111:
        return False
    return not (entry.base.kind == "file" and entry.base.mode & 0o111)


def mark(manifest: Manifest, folder: Path) -> list[str]:
    """Flags the entries of the change set; returns the flagged paths its commits touch."""
    tree = FinalTree(manifest.project, manifest.entries, folder)
    links = _links(tree, manifest.entries)
    for entry in manifest.entries:
        entry.flagged = entry.flagged or _flagged(tree, links, entry)
    flagged = {e.path for e in manifest.entries if e.flagged}
    for entry in manifest.entries:  # a link to a flagged file: its target flags it too
        landed = links.get(entry.path)
        entry.flagged = entry.flagged or (landed is not None and landed.inside and landed.path in flagged)
    return [p for p in touched.series_paths(manifest, folder) if runs(p, links)] if manifest.series else []


def _flagged(tree: FinalTree, links: dict[str, Place], entry: Entry) -> bool:
    if any(runs(path, links) for path in filter(None, (entry.path, entry.origin))) or newly_executable(entry):
        return True
    if entry.new.kind != "symlink":
        return False
    landed = links.get(entry.path) or resolve(tree, entry.path)
    return not landed.inside or (not landed.broken and runs(landed.path, links))


def runs(path: str, links: dict[str, Place]) -> bool:
    """Whether `path`, by any name it can be reached by inside the project, is flagged."""
    seen = {path}
    names = [path]
    for _ in range(DEPTH):
        if any(paths.is_flagged(name) for name in names):
            return True
        names = [alias for name in names for alias in _aliases(name, links) if alias not in seen]
        seen.update(names)
        if not names:
            return False
    return False


def _aliases(path: str, links: dict[str, Place]) -> list[str]:
    """The other names of `path`: each link that lands on it, or on a folder above it, and the rest."""
    found = []
    for link, place in links.items():
        if not place.inside or place.broken:
            continue
        if place.path == "":
            found.append(join(link, path))
        elif path == place.path or path.startswith(place.path + "/"):
            found.append(link + path[len(place.path) :])
    return found


def _links(tree: FinalTree, entries: list[Entry]) -> dict[str, Place]:
    """Every symlink of the final tree worth reading, and where it lands."""
    names = {e.path for e in entries if e.new.kind == "symlink"}
    folders = {""} | {os.path.dirname(p) for e in entries for p in filter(None, (e.path, e.origin))}
    for folder in sorted({f for start in folders for f in _on_the_way(start)}):
        names.update(join(folder, name) for name in _host_links(tree, folder))
    links = {}
    for name in sorted(names):
        node = tree.lstat(name)
        if node is not None and node.kind == "symlink":
            links[name] = resolve(tree, name)
    return links


def _on_the_way(folder: str) -> list[str]:
    names = folder.split("/") if folder else []
    return ["/".join(names[:i]) for i in range(len(names) + 1)]


def _host_links(tree: FinalTree, folder: str) -> list[str]:
    full = tree.real_folder(folder)
    if full is None:
        return []
    try:
        with os.scandir(full) as items:
            return [item.name for item in items if item.is_symlink()]
    except OSError:
        return []
