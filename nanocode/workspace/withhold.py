"""Overlay mode's half of "repositories found the way git finds them": what a change set leaves out.

Invariant: a change set never brings into the project a file that git would read as a repository's
own (`gitdirs.REPO_OWN`: `HEAD`, `config`, `commondir`, `objects/`, `refs/`, `hooks/`, ...) of any
folder that is a repository, by git's own test, in the project as it is or as the change set would
leave it (the project's real `.git` is never in a change set at all). Whatever lands there through
a symlink counts too. Such entries are left out (deleting is not bringing: deletions stay), and so
are the goal's commits when they touch one, or any `HEAD`, `commondir` or `gitdir`; the rest
applies, and the user is told what was left out and why.
"""

from pathlib import Path

from nanocode import display
from nanocode.workspace import gitdirs, touched
from nanocode.workspace.changeset import Entry, Manifest
from nanocode.workspace.finaltree import BaseTree, FinalTree
from nanocode.workspace.trees import Tree, join, resolve

MARKS = frozenset({"HEAD", "commondir", "gitdir"})  # what makes a folder a repository, in a commit


def candidates(entries: list[Entry]) -> set[str]:
    """The folders a change could make (or change as) a repository: those holding a changed path
    named as a repository's own."""
    found = set()
    for entry in entries:
        for path in filter(None, (entry.path, entry.origin)):
            names = path.split("/")
            for i, name in enumerate(names):
                if name in gitdirs.REPO_OWN:
                    found.add("/".join(names[:i]))
    return found


def repositories(entries: list[Entry], project: str, folder: Path) -> list[str]:
    """The candidate folders that are repositories before or after the change set."""
    after = FinalTree(project, entries, folder)
    before = BaseTree(project)
    return sorted(d for d in candidates(entries) if any(gitdirs.is_git_directory(t, d) for t in (after, before)))


def own_places(tree: Tree, repository: str) -> set[str]:
    """Where, inside the project, the repository's own files land (through symlinks too), and those
    of the common folder it names."""
    folders = [repository]
    common = gitdirs.common_dir(tree, repository)
    if common is not None and common.inside and not common.broken:
        folders.append(common.path)
    places = set()
    for folder in folders:
        for name in gitdirs.REPO_OWN:
            places.add(join(folder, name))
            landed = resolve(tree, join(folder, name))
            if landed.inside and not landed.broken:
                places.add(landed.path)
    return places


def _under(path: str, places: set[str]) -> bool:
    names = path.split("/")
    return any("/".join(names[: i + 1]) in places for i in range(len(names)))


def problems(manifest: Manifest, folder: Path) -> list[str]:
    """At apply, against the project as it is now: the entries that would still make or change a
    repository (the project changed since the goal, or the change set predates this rule)."""
    found = repositories(manifest.entries, manifest.project, folder)
    if not found:
        return []
    after = FinalTree(manifest.project, manifest.entries, folder)
    places = set().union(*(own_places(after, d) for d in found))
    return [
        f"{e.path}: a file git would read as the repository's own (of {', '.join(d or '.' for d in found)})"
        for e in manifest.entries
        if e.new.kind != "absent" and _under(e.path, places)
    ]


def withhold(manifest: Manifest, folder: Path) -> list[str]:
    """Leaves out of the change set what would plant or change a repository; returns the notes that
    say so (none when nothing was left out)."""
    found = repositories(manifest.entries, manifest.project, folder)
    if not found:
        return _series(manifest, folder, set())
    after = FinalTree(manifest.project, manifest.entries, folder)
    places = set().union(*(own_places(after, d) for d in found))
    kept: list[Entry] = []
    left: list[Entry] = []
    for entry in manifest.entries:
        (left if entry.new.kind != "absent" and _under(entry.path, places) else kept).append(entry)
    # A rename left out still deletes its origin (deleting is not bringing).
    kept += [e.origin_gone() for e in left if e.action == "rename"]
    manifest.entries = sorted(kept, key=lambda e: e.path)
    manifest.ignored += [e.path for e in left]
    notes = []
    if left:
        where = ", ".join(d or "the project's top" for d in found)
        shown = ", ".join(display.name(e.path) for e in left[:8]) + (", ..." if len(left) > 8 else "")
        notes.append(
            f"warning: {len(left)} path(s) left out of the change set: they would make or change a git "
            f"repository that host git reads ({where}): {shown}"
        )
    return notes + _series(manifest, folder, places)


def _series(manifest: Manifest, folder: Path, places: set[str]) -> list[str]:
    """The commits go too when they touch a repository's own file, or any HEAD, commondir or gitdir."""
    if not manifest.git.get("tip"):
        return []
    paths = touched.series_paths(manifest, folder)
    bad = [p for p in paths if _under(p, places) or p.split("/")[-1] in MARKS]
    if not bad:
        return []
    manifest.drop_commits()
    return [
        f"warning: the goal's commits are not kept (their changes are, as uncommitted work): they touch "
        f"files git would read as a repository's own ({', '.join(display.name(p) for p in bad[:8])})"
    ]
