"""How a change set reads: a summary like `git diff --stat`, and a unified diff."""

import difflib
import os
from collections.abc import Iterator
from pathlib import Path

from nanocode.display import printable
from nanocode.workspace.changeset import Entry, Manifest, State

FLAG = "  [runs on the host: review]"
TEXT_LIMIT = 2 << 20


def summary(manifest: Manifest, folder: Path) -> list[str]:
    """One line per path, and a total, as `git diff --stat` has it; flagged paths say so."""
    lines = []
    added = removed = 0
    shown = [e for e in manifest.entries if e.new.kind != "dir" or e.action == "mode"]
    width = min(max((len(printable(_label(e))) for e in shown), default=0), 60)
    for entry in shown:
        plus, minus = _counts(entry, manifest, folder)
        added, removed = added + plus, removed + minus
        label = printable(_label(entry)).ljust(width)
        lines.append(f" {label} | {_what(entry, plus, minus)}{FLAG if entry.flagged else ''}")
    files = len(shown)
    total = f" {files} file{'s' if files != 1 else ''} changed, {added} insertions(+), {removed} deletions(-)"
    if manifest.series:
        count = len(manifest.series)
        total += f"; {count} commit{'s' if count != 1 else ''} on {manifest.git.get('branch')}"
    return [*lines, total, *_commits_flagged(manifest)]


def _commits_flagged(manifest: Manifest) -> list[str]:
    shown = ", ".join(printable(p) for p in manifest.flagged_commits[:10])
    return [f" the commits touch {shown}{FLAG}"] if manifest.flagged_commits and manifest.series else []


def _label(entry: Entry) -> str:
    return f"{entry.origin} => {entry.path}" if entry.action == "rename" else entry.path


def _what(entry: Entry, plus: int, minus: int) -> str:
    if entry.action == "mode":
        return f"mode {entry.base.mode:o} => {entry.new.mode:o}"
    if entry.new.kind == "symlink" or (entry.action == "delete" and entry.base.kind == "symlink"):
        return f"symlink {entry.action}"
    if entry.binary or (entry.action == "delete" and entry.base.kind != "file"):
        return f"{entry.action} (binary)" if entry.binary else entry.action
    return f"{entry.action} {'+' * min(plus, 20)}{'-' * min(minus, 20)} (+{plus} -{minus})"


def _counts(entry: Entry, manifest: Manifest, folder: Path) -> tuple[int, int]:
    if entry.binary:
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
    """The old text: the project's file, if it still holds what the change set was computed against."""
    if entry.base.kind != "file":
        return []
    path = os.path.join(manifest.project, entry.origin or entry.path)
    if State.of(path).sha256 != entry.base.sha256:
        return ["(the project's file changed since the goal; its old text is not kept)"]
    return _read_lines(path)


def _new(entry: Entry, folder: Path) -> list[str]:
    return _read_lines(str(folder / entry.blob)) if entry.blob else []


def diff(manifest: Manifest, folder: Path) -> Iterator[str]:
    """A unified diff of every entry, binary files named, flagged files marked; then the commits."""
    for entry in manifest.entries:
        if entry.new.kind == "dir" and entry.action != "mode":
            continue
        old, new = entry.origin or entry.path, entry.path
        yield f"diff --nanocode a/{old} b/{new}{FLAG if entry.flagged else ''}"
        if entry.action == "mode":
            yield f"old mode {entry.base.mode:o}"
            yield f"new mode {entry.new.mode:o}"
            continue
        if entry.new.kind == "symlink" or entry.base.kind == "symlink":
            yield f"symlink: {entry.base.target or '(none)'} => {entry.new.target or '(none)'}"
            if entry.new.kind == "symlink" and entry.base.kind != "file":
                continue
        if entry.binary:
            yield f"Binary file {new} {entry.action}"
            continue
        before = _old(entry, manifest)
        after = _new(entry, folder)
        source = f"a/{old}" if entry.base.kind != "absent" else "/dev/null"
        target = f"b/{new}" if entry.new.kind != "absent" else "/dev/null"
        yield from difflib.unified_diff(before, after, source, target, lineterm="")
    yield from _commits_flagged(manifest)
    for name in manifest.series:
        yield f"commit patch {name}"
        yield from _read_lines(str(folder / "series" / name))
