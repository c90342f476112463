"""Applying a change set to its project: all of it or nothing, and nothing outside the project.

The invariant: after `apply`, every path the change set touches is exactly its final state in the
goal (absent, a folder, a regular file with its content and executable bit, or a symlink with its
target), and nothing outside the project changed: no content, mode, owner or existence.

How it holds, by construction rather than by checking names:
- Every operation on the working tree (write, chmod, unlink, rename, mkdir, rmdir) is made
  relative to a folder handle opened name by name without following symlinks (`handles.Tree`).
  A symlink on the way, whether the host had it or anything made it since, stops the operation;
  nothing is ever reached through one.
- The working tree is written from the change set's final states alone. The goal's commits never
  touch it: git fetches their objects, moves the branch and sets the index (`history`),
  so a commit cannot bring back a path the goal deleted, nor act on a path through a symlink.
- Modes are git's: regular files 0644 or 0755 by their executable bit, folders 0755; no setuid,
  setgid, sticky, group- or world-writable bit from the goal reaches the host.
- Every path is first compared with what the change set was computed against; a folder on the
  way that is a symlink (or not a folder) is a conflict; any conflict applies nothing (exit 6).
- A failure midway undoes every step, the commits too, by the same handles.
"""

from datetime import UTC, datetime
from pathlib import Path

from nanocode.errors import EXIT_CONFLICT, ApplyError
from nanocode.workspace import paths, store, withhold
from nanocode.workspace.changeset import Entry, Manifest, State
from nanocode.workspace.handles import Beyond, Tree
from nanocode.workspace.history import History
from nanocode.workspace.transaction import Transaction

__all__ = ["EXIT_CONFLICT", "ApplyError", "apply", "check"]
SAFE_BITS = 0o755  # what a mode from the goal may hold


def state(tree: Tree, path: str) -> State:
    return State.at(tree, path)


def check(manifest: Manifest, tree: Tree) -> list[str]:
    """The paths that stop the change set from applying, each with its reason."""
    problems = []
    # A path deleted and made again as another kind (a file as a folder): its delete checks the base.
    replaced = {e.origin or e.path for e in manifest.entries if e.action in ("delete", "rename")}
    for entry in manifest.entries:
        for path in filter(None, (entry.path, entry.origin)):
            reason = _refused(tree, path, replaced)
            if reason:
                problems.append(f"{path}: {reason}")
        if entry.changed_during_goal:
            problems.append(f"{entry.origin or entry.path}: changed on the host while the goal ran")
            continue
        if entry.action == "add" and _under(entry.path, replaced):
            continue
        try:
            expected = _as_expected(tree, entry, replaced)
        except Beyond as exc:
            problems.append(f"{entry.origin or entry.path}: {exc.path} {exc.why} on the host")
            continue
        if not expected:
            problems.append(f"{entry.origin or entry.path}: changed on the host since the goal started")
    return sorted(set(problems))


def _under(path: str, replaced: set[str]) -> bool:
    """Whether `path`, or a folder on its way, goes before anything is made there."""
    names = path.split("/")
    return any("/".join(names[:i]) in replaced for i in range(1, len(names) + 1))


def _refused(tree: Tree, path: str, replaced: set[str]) -> str:
    if not paths.is_safe_name(path):
        return "not a path nanocode applies (outside the project, git, or a secret)"
    blocked = tree.blocked(path)
    if blocked and blocked not in replaced:
        kind = "a symlink" if state(tree, blocked).kind == "symlink" else "not a folder"
        return f"the folder on the way {blocked} is {kind} on the host"
    return ""


def _as_expected(tree: Tree, entry: Entry, replaced: set[str]) -> bool:
    if entry.action == "rename":
        free = _under(entry.path, replaced) or tree.lstat(entry.path) is None
        return _same(state(tree, entry.origin), entry.base) and free
    now = state(tree, entry.path)
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


def apply(manifest: Manifest, folder: Path) -> None:
    """Applies the change set to its project, atomically; raises ApplyError and changes nothing otherwise."""
    try:
        tree = Tree(manifest.project)
    except OSError as exc:
        raise ApplyError(f"nothing applied: cannot open the project {manifest.project}: {exc.strerror}") from None
    with tree:
        commits = History(manifest, folder)
        problems = check(manifest, tree) + commits.check() + withhold.problems(manifest, folder)
        if problems:
            count = len(problems)
            raise ApplyError(f"nothing applied: {count} conflict(s) with the project: " + "; ".join(problems[:20]))
        _carry_out_all(manifest, folder, tree, commits)


def _carry_out_all(manifest: Manifest, folder: Path, tree: Tree, commits: History) -> None:
    done = Transaction(tree)
    try:
        commits.apply()
        done.open()
        _stage_contents(manifest, folder, done)
        _carry_out(manifest, done)
    except (OSError, ApplyError) as exc:
        failed = done.rollback() + commits.undo()
        done.close(keep=bool(failed))
        left = f"; could not undo: {'; '.join(failed)} (what was put aside is in {done.stage})" if failed else ""
        reason = exc.format_message().removeprefix("nothing applied: ") if isinstance(exc, ApplyError) else exc
        raise ApplyError(f"nothing applied: {reason}{left}") from None
    done.close()


def mark_applied(manifest: Manifest, folder: Path) -> None:
    manifest.applied = datetime.now(UTC).isoformat(timespec="seconds")
    store.save(manifest, folder)


def _stage_contents(manifest: Manifest, folder: Path, done: Transaction) -> None:
    """Copies every new file and symlink into the stage first, where nothing of the project is touched."""
    for entry in manifest.entries:
        if entry.action == "mode" or entry.new.kind not in ("file", "symlink"):
            continue
        if entry.new.kind == "symlink":
            done.stage_link(entry.path, entry.new.target)
        else:
            done.stage_file(entry.path, folder / entry.blob, entry.new.mode & SAFE_BITS)


def _carry_out(manifest: Manifest, done: Transaction) -> None:
    # Deepest first: a folder's files go before the folder.
    for entry in sorted(manifest.entries, key=lambda e: -(e.origin or e.path).count("/")):
        if _replaces(entry):
            done.put_aside(entry.origin or entry.path)
    for entry in sorted(manifest.entries, key=lambda e: e.path.count("/")):
        if entry.action == "mode":
            done.chmod(entry.path, entry.new.mode & SAFE_BITS)
        elif entry.new.kind == "dir":
            _make_parents(entry.path, done)
            done.make_folder(entry.path)
        elif entry.new.kind in ("file", "symlink"):
            _make_parents(entry.path, done)
            done.place(entry.path)


def _replaces(entry: Entry) -> bool:
    """Whether the project's file at the entry's (old) path goes first."""
    if entry.action in ("delete", "rename"):
        return True
    return entry.action == "modify" and entry.base.kind != "absent"


def _make_parents(path: str, done: Transaction) -> None:
    names = path.split("/")[:-1]
    for i in range(1, len(names) + 1):
        done.make_folder("/".join(names[:i]))
