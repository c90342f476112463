"""Applying a change set to the project: all of it or nothing.

Every path is checked first (a name the sandbox gave may not leave the project, pass through a
symlink the host has, or touch git or a secret) and compared with what the change set was computed
against; any difference is a conflict, and nothing is applied. Then the new contents are staged
beside the project's files, and renamed into place; a failure midway undoes what was done.
"""

import os
import secrets
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nanocode.errors import EXIT_CONFLICT, ApplyError
from nanocode.workspace import gitseries, paths, store
from nanocode.workspace.changeset import Entry, Manifest, State

__all__ = ["EXIT_CONFLICT", "ApplyError", "apply", "check"]


def check(manifest: Manifest) -> list[str]:
    """The paths that stop the change set from applying, each with its reason."""
    problems = []
    project = manifest.project
    # A path deleted and made again as another kind (a file as a folder): its delete checks the base.
    replaced = {e.path for e in manifest.entries if e.action == "delete"}
    for entry in manifest.entries:
        for path in filter(None, (entry.path, entry.origin)):
            reason = _refused(project, path)
            if reason:
                problems.append(f"{path}: {reason}")
        if entry.changed_during_goal:
            problems.append(f"{entry.origin or entry.path}: changed on the host while the goal ran")
            continue
        if entry.action == "add" and entry.path in replaced:
            continue
        if not _as_expected(project, entry):
            problems.append(f"{entry.origin or entry.path}: changed on the host since the goal started")
    return sorted(set(problems))


def _refused(project: str, path: str) -> str:
    if not paths.is_safe_name(path):
        return "not a path nanocode applies (outside the project, git, or a secret)"
    here = project
    for name in path.split("/")[:-1]:
        here = os.path.join(here, name)
        if os.path.islink(here):
            return "a folder on the way is a symlink on the host"
    return ""


def _as_expected(project: str, entry: Entry) -> bool:
    if entry.action == "rename":
        return _same(State.of(os.path.join(project, entry.origin)), entry.base) and not os.path.lexists(
            os.path.join(project, entry.path)
        )
    now = State.of(os.path.join(project, entry.path))
    if entry.new.kind == "dir" and entry.action == "add" and now.kind == "dir":
        return True  # made by the user too: nothing to lose
    if entry.base.kind == "dir" and entry.action == "delete":
        return now.kind in ("dir", "absent")
    return _same(now, entry.base)


def _same(now: State, base: State) -> bool:
    if now.kind != base.kind:
        return False
    if base.kind == "file":
        return now.sha256 == base.sha256
    if base.kind == "symlink":
        return now.target == base.target
    return True


class Transaction:
    """What was done, in order, so that it can be undone."""

    def __init__(self, project: str):
        self.project = project
        self.stage = os.path.join(project, f".nanocode-apply-{secrets.token_hex(6)}")
        self.undo: list[Callable[[], None]] = []
        self.count = 0
        self.contents: dict[str, str] = {}  # path -> its new content, staged

    def staged(self) -> str:
        self.count += 1
        return os.path.join(self.stage, str(self.count))

    def put_aside(self, path: str) -> None:
        """Moves the project's `path` into the stage; undone by moving it back."""
        if not os.path.lexists(path):
            return
        aside = self.staged()
        if os.path.isdir(path) and not os.path.islink(path):
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            os.rmdir(path)  # its contents were put aside first; a file the user added stops it here
            self.undo.append(lambda: os.mkdir(path, mode))
            return
        os.replace(path, aside)
        self.undo.append(lambda: os.replace(aside, path))

    def make_folder(self, path: str, mode: int) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            return
        os.mkdir(path, 0o700)
        os.chmod(path, mode)
        self.undo.append(lambda: os.rmdir(path))

    def place(self, source: str, path: str) -> None:
        os.replace(source, path)
        self.undo.append(lambda: os.unlink(path))

    def chmod(self, path: str, mode: int) -> None:
        old = stat.S_IMODE(os.lstat(path).st_mode)
        os.chmod(path, mode)
        self.undo.append(lambda: os.chmod(path, old))

    def rollback(self) -> list[str]:
        failed = []
        for step in reversed(self.undo):
            try:
                step()
            except OSError as exc:
                failed.append(str(exc))
        return failed


def apply(manifest: Manifest, folder: Path) -> None:
    """Applies the change set to its project, atomically; raises ApplyError and changes nothing otherwise."""
    problems = check(manifest)
    if problems:
        raise ApplyError(f"nothing applied: {len(problems)} conflict(s) with the project: " + "; ".join(problems[:20]))
    series = gitseries.Applier(manifest, folder) if manifest.series else None
    if series is not None:
        series.apply()
    done = Transaction(manifest.project)
    try:
        os.mkdir(done.stage, 0o700)
        _stage_contents(manifest, folder, done)
        _carry_out(manifest, done)
    except OSError as exc:
        failed = done.rollback()
        if series is not None:
            failed += series.undo()
        shutil.rmtree(done.stage, ignore_errors=True)
        left = f"; could not undo: {'; '.join(failed)} (what was put aside is in {done.stage})" if failed else ""
        raise ApplyError(f"nothing applied: {exc}{left}") from None
    shutil.rmtree(done.stage, ignore_errors=True)


def mark_applied(manifest: Manifest, folder: Path) -> None:
    manifest.applied = datetime.now(UTC).isoformat(timespec="seconds")
    store.save(manifest, folder)


def _stage_contents(manifest: Manifest, folder: Path, done: Transaction) -> None:
    """Copies every new file and symlink into the stage first, where nothing of the project is touched."""
    for entry in manifest.entries:
        if entry.action == "mode" or entry.new.kind not in ("file", "symlink"):
            continue
        target = done.staged()
        if entry.new.kind == "symlink":
            os.symlink(entry.new.target, target)
        else:
            shutil.copyfile(folder / entry.blob, target)
            os.chmod(target, entry.new.mode)
        done.contents[entry.path] = target


def _carry_out(manifest: Manifest, done: Transaction) -> None:
    project = manifest.project
    # Deepest first: a folder's files go before the folder.
    for entry in sorted(manifest.entries, key=lambda e: -(e.origin or e.path).count("/")):
        if _replaces(entry):
            done.put_aside(os.path.join(project, entry.origin or entry.path))
    for entry in sorted(manifest.entries, key=lambda e: e.path.count("/")):
        path = os.path.join(project, entry.path)
        if entry.action == "mode":
            done.chmod(path, entry.new.mode)
        elif entry.new.kind == "dir":
            _make_parents(project, entry.path, done)
            done.make_folder(path, entry.new.mode)
        elif entry.new.kind in ("file", "symlink"):
            _make_parents(project, entry.path, done)
            done.place(done.contents[entry.path], path)


def _replaces(entry: Entry) -> bool:
    """Whether the project's file at the entry's (old) path goes first."""
    if entry.action in ("delete", "rename"):
        return True
    return entry.action == "modify" and entry.base.kind != "absent"


def _make_parents(project: str, path: str, done: Transaction) -> None:
    here = project
    for name in path.split("/")[:-1]:
        here = os.path.join(here, name)
        done.make_folder(here, 0o755)
