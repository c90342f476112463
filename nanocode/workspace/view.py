"""How a change set reads: a summary like `git diff --stat`, and a unified diff.

Both show what `apply` does and nothing else: every path once (the goal's commits included: the
commits themselves are listed after, by id and subject), every mode change as git shows it, every
symlink with its target, flagged when it is absolute or leaves the project.
"""

import difflib
import os
from collections.abc import Iterator
from pathlib import Path

from nanocode.display import name
from nanocode.workspace.changeset import Entry, Manifest, State, digest_fd
from nanocode.workspace.handles import Tree

FLAG = "  [runs on the host: review]"
OUTSIDE = "  [leaves the project]"
TEXT_LIMIT = 2 << 20
CHANGED = "(the project's file changed since the goal; its old text is not kept)"


def summary(manifest: Manifest, folder: Path) -> list[str]:
    """One line per path, and a total, as `git diff --stat` has it; flagged paths say so."""
    lines = []
    added = removed = 0
    shown = [e for e in manifest.entries if e.new.kind != "dir" or e.action == "mode"]
    width = min(max((len(_label(e)) for e in shown), default=0), 60)
    for entry in shown:
        plus, minus = _counts(entry, manifest, folder)
        added, removed = added + plus, removed + minus
        label = _label(entry).ljust(width)
        lines.append(f" {label} | {_what(entry, plus, minus)}{_flags(entry)}")
    files = len(shown)
    total = f" {files} file{'s' if files != 1 else ''} changed, {added} insertions(+), {removed} deletions(-)"
    if manifest.series:
        count = len(manifest.series)
        total += f"; {count} commit{'s' if count != 1 else ''} on {manifest.git.get('branch')}"
    return [*lines, total, *_commits_flagged(manifest)]


def _commits_flagged(manifest: Manifest) -> list[str]:
    shown = ", ".join(name(p) for p in manifest.flagged_commits[:10])
    return [f" the commits touch {shown}{FLAG}"] if manifest.flagged_commits and manifest.series else []


def leaves_project(path: str, target: str) -> bool:
    """Whether a symlink at `path` to `target` points out of the project (or anywhere, when absolute)."""
    if target.startswith("/"):
        return True
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


def _flags(entry: Entry) -> str:
    outside = entry.new.kind == "symlink" and leaves_project(entry.path, entry.new.target)
    return (FLAG if entry.flagged else "") + (OUTSIDE if outside else "")


def git_mode(state: State) -> str:
    """The mode as git writes it: 100644, 100755, 120000 or 040000."""
    if state.kind == "symlink":
        return "120000"
    if state.kind == "dir":
        return "040000"
    return "100755" if state.mode & 0o100 else "100644"


def _label(entry: Entry) -> str:
    return f"{name(entry.origin)} => {name(entry.path)}" if entry.action == "rename" else name(entry.path)


def _what(entry: Entry, plus: int, minus: int) -> str:
    if entry.action == "mode":
        return f"mode {git_mode(entry.base)} => {git_mode(entry.new)}"
    if entry.new.kind == "symlink":
        return f"symlink {entry.action} -> {name(entry.new.target)}"
    if entry.action == "delete" and entry.base.kind == "symlink":
        return "symlink delete"
    if entry.binary or (entry.action == "delete" and entry.base.kind != "file"):
        return f"{entry.action} (binary)" if entry.binary else entry.action
    return f"{entry.action} {'+' * min(plus, 20)}{'-' * min(minus, 20)} (+{plus} -{minus})"


def _counts(entry: Entry, manifest: Manifest, folder: Path) -> tuple[int, int]:
    if entry.binary or entry.action == "mode":
        return 0, 0
    diff = list(difflib.unified_diff(_old(entry, manifest), _new(entry, folder), lineterm=""))
    plus = sum(1 for line in diff[2:] if line.startswith("+"))
    minus = sum(1 for line in diff[2:] if line.startswith("-"))
    return plus, minus


def _read_lines(path: str) -> list[str]:
    try:
        if os.path.getsize(path) > TEXT_LIMIT:
            return ["(too long to show)"]
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def _old(entry: Entry, manifest: Manifest) -> list[str]:
    """The old text: the project's file, if it still holds what the change set was computed against
    (read through folder handles, never through a symlink)."""
    if entry.base.kind != "file":
        return []
    try:
        with Tree(manifest.project) as tree, tree.open_file(entry.origin or entry.path) as fd:
            if digest_fd(fd) != entry.base.sha256:
                return [CHANGED]
            if os.fstat(fd).st_size > TEXT_LIMIT:
                return ["(too long to show)"]
            os.lseek(fd, 0, os.SEEK_SET)
            with open(fd, "rb", closefd=False) as f:
                return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return [CHANGED]


def _new(entry: Entry, folder: Path) -> list[str]:
    return _read_lines(str(folder / entry.blob)) if entry.blob else []


def diff(manifest: Manifest, folder: Path) -> Iterator[str]:
    """A unified diff of every entry, binary files named, flagged files marked; then the commits, listed."""
    yield from manifest.notes
    for entry in manifest.entries:
        if entry.new.kind == "dir":
            continue
        yield from _entry_diff(entry, manifest, folder)
    yield from _commits_flagged(manifest)
    yield from _commits(manifest, folder)


def _entry_diff(entry: Entry, manifest: Manifest, folder: Path) -> Iterator[str]:
    old, new = name(entry.origin or entry.path), name(entry.path)
    yield f"diff --nanocode a/{old} b/{new}{_flags(entry)}"
    yield from _mode_lines(entry)
    if entry.new.kind == "symlink":
        yield f"symlink to {name(entry.new.target)}"
    if entry.base.kind == "symlink":
        yield f"was a symlink to {name(entry.base.target)}"
    if entry.action == "mode" or (entry.new.kind != "file" and entry.base.kind != "file"):
        return
    if entry.binary:
        yield f"Binary file {new} {entry.action}"
        return
    before = _old(entry, manifest)
    after = _new(entry, folder)
    source = f"a/{old}" if entry.base.kind == "file" else "/dev/null"
    target = f"b/{new}" if entry.new.kind == "file" else "/dev/null"
    yield from difflib.unified_diff(before, after, source, target, lineterm="")


def _mode_lines(entry: Entry) -> Iterator[str]:
    """As git shows them: the new or deleted file's mode, or the old and new modes."""
    was = entry.base.kind in ("file", "symlink")
    now = entry.new.kind in ("file", "symlink")
    if was and now and git_mode(entry.base) != git_mode(entry.new):
        yield f"old mode {git_mode(entry.base)}"
        yield f"new mode {git_mode(entry.new)}"
    elif now and not was:
        yield f"new file mode {git_mode(entry.new)}"
    elif was and not now:
        yield f"deleted file mode {git_mode(entry.base)}"


def _commits(manifest: Manifest, folder: Path) -> Iterator[str]:
    """The goal's commits by id, subject and files: their changes are in the diff above, once."""
    if not manifest.series:
        return
    count = len(manifest.series)
    branch = manifest.git.get("branch", "")
    yield f"# {count} commit{'s' if count != 1 else ''} on {branch} (their changes are in the diff above)"
    log = folder / "series.log"
    yield from _read_lines(str(log)) if log.is_file() else manifest.series
