"""The project boundary, as a property: for change sets generated at random, applying leaves every
path the change set touches exactly as the goal left it (modes as git has them), every other path as
it was, and a folder outside the project unchanged; or, when the host changed under the change set,
applies nothing at all.

Each case is a small git project (files, folders, symlinks inside and out, odd modes) and a goal run
on a copy of it without following a symlink (writes, chmods to setuid or 0777, renames, changes of
kind, symlinks to the outside folder, commits, amends and resets, uncommitted work on top). The copy
against the project gives the overlay upper folder the change set is built from, as the engine's
overlayfs would (whiteouts and opaque folders named rather than made, so no root is needed).
"""

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from nanocode.errors import ApplyError
from nanocode.workspace import apply, gitseries, store
from nanocode.workspace.changeset import Manifest
from nanocode.workspace.workspace import compute

NAMES = ["a", "b", "d", "d/x", "d/e", "d/e/z", "f/y"]
OUTSIDE = "/OUTSIDE"  # stands for the outside folder's absolute path
TARGETS = ["a", "d", "x", "../a", "../outside/f.txt", "../../outside/f.txt", f"{OUTSIDE}/f.txt", OUTSIDE, "/etc"]
MODES = [0o644, 0o755, 0o600, 0o664, 0o4755, 0o2775, 0o1777, 0o777, 0o000 | 0o400]
BASE_MODES = [0o644, 0o755, 0o600, 0o664]
CONTENT = st.sampled_from([b"", b"one\n", b"two\n", b"\x00bin"])

names = st.sampled_from(NAMES)
base_item = st.one_of(
    st.tuples(st.just("file"), names, CONTENT, st.sampled_from(BASE_MODES)),
    st.tuples(st.just("dir"), names),
    st.tuples(st.just("link"), names, st.sampled_from(TARGETS)),
)
step = st.one_of(
    st.tuples(st.just("write"), names, CONTENT, st.sampled_from(MODES)),
    st.tuples(st.just("chmod"), names, st.sampled_from(MODES)),
    st.tuples(st.just("mkdir"), names),
    st.tuples(st.just("link"), names, st.sampled_from(TARGETS)),
    st.tuples(st.just("remove"), names),
    st.tuples(st.just("rename"), names, names),
    st.tuples(st.sampled_from(["commit", "amend", "reset"])),
)
tamper = st.one_of(st.none(), st.tuples(st.sampled_from(["link", "write", "commit"]), names))


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ident = ["-c", "user.name=t", "-c", "user.email=t@x", "-c", "init.defaultBranch=main"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


# A goal's actions, made without following any symlink (a symlink the goal meets is replaced, as in the
# container, where those to the host's outside folder lead nowhere).


def _clear(root: Path, path: str) -> None:
    """Makes every folder on the way to `path` a real folder."""
    here = root
    for name in path.split("/")[:-1]:
        here = here / name
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
        if not here.exists():
            here.mkdir()


def _remove(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _target(target: str, outside: Path) -> str:
    return target.replace(OUTSIDE, str(outside))


def _act(root: Path, action: tuple, outside: Path) -> None:  # type: ignore[type-arg]
    kind, *args = action
    if kind in ("commit", "amend", "reset"):
        _commit(root, kind)
        return
    path = args[0]
    _clear(root, path)
    full = root / path
    if kind == "write":
        _remove(full)
        full.write_bytes(args[1])
        os.chmod(full, args[2])
    elif kind == "chmod" and full.is_file() and not full.is_symlink():
        os.chmod(full, args[1])
    elif kind == "mkdir" and not (full.is_dir() and not full.is_symlink()):
        _remove(full)
        full.mkdir()
    elif kind == "link":
        _remove(full)
        full.symlink_to(_target(args[1], outside))
    elif kind == "remove":
        _remove(full)
    elif kind == "rename" and (full.exists() or full.is_symlink()) and _apart(path, args[1]):
        _clear(root, args[1])
        _remove(root / args[1])
        os.rename(full, root / args[1])


def _apart(one: str, other: str) -> bool:
    """Neither path is the other or inside it."""
    return not (one + "/").startswith(other + "/") and not (other + "/").startswith(one + "/")


def _commit(root: Path, kind: str) -> None:
    _git(root, "add", "-A")
    if kind == "commit":
        _git(root, "commit", "-q", "--allow-empty", "-m", "c")
    elif kind == "amend":
        _git(root, "commit", "-q", "--amend", "--allow-empty", "-m", "amended")
    else:
        _git(root, "reset", "-q", "--soft", "HEAD~1")


def _make_project(root: Path, items: list[tuple], outside: Path) -> None:  # type: ignore[type-arg]
    root.mkdir()
    for item in items:
        kind, path, *args = item
        if kind == "file":
            _act(root, ("write", path, args[0], args[1]), outside)
        elif kind == "dir":
            _act(root, ("mkdir", path), outside)
        else:
            _act(root, ("link", path, args[0]), outside)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "--allow-empty", "-m", "start")


# The overlay upper folder that the goal's copy makes of the project.


@dataclass
class Upper:
    root: str
    whiteouts: set[str]
    opaque: set[str]

    def is_whiteout(self, path: str, st: os.stat_result) -> bool:
        return path in self.whiteouts

    def is_opaque(self, path: str) -> bool:
        return path in self.opaque


def _same(a: Path, b: Path) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_mode == sb.st_mode and a.read_bytes() == b.read_bytes()
    return True


def _upper(lower: Path, merged: Path, upper: Upper, rel: str = "", fresh: bool = False) -> None:
    """What overlayfs's upper folder holds for `merged` over `lower`, from the folder `rel` down;
    `fresh` where the lower has no folder `rel` (overlayfs follows no symlink of the lower: below a
    folder that took a symlink's place, everything is new, whatever the symlink pointed to)."""
    here, below = merged / rel, lower / rel
    top = Path(upper.root) / rel
    top.mkdir(exist_ok=True)
    for item in sorted(os.listdir(here)):
        if item == ".git" and not rel:
            continue
        name = f"{rel}/{item}" if rel else item
        new, old = merged / name, lower / name
        old_exists = not fresh and (old.exists() or old.is_symlink())
        if new.is_dir() and not new.is_symlink():
            old_dir = old_exists and old.is_dir() and not old.is_symlink()
            if old_exists and not old_dir:
                (Path(upper.root) / name).mkdir()
                upper.opaque.add(str(Path(upper.root) / name))
            _upper(lower, merged, upper, name, not old_dir)
            continue
        if old_exists and _same(old, new):
            continue
        if new.is_symlink():
            os.symlink(os.readlink(new), Path(upper.root) / name)
        else:
            shutil.copy2(new, Path(upper.root) / name)
    if not fresh and below.is_dir() and not below.is_symlink():
        for item in os.listdir(below):
            if item == ".git" and not rel:
                continue
            if not (here / item).exists() and not (here / item).is_symlink():
                white = Path(upper.root) / (f"{rel}/{item}" if rel else item)
                white.write_bytes(b"")
                upper.whiteouts.add(str(white))


def _prune(upper: Upper, lower: Path) -> None:
    """Folders of the upper with nothing in them, that the project has, were never copied up."""
    for folder, _, _ in os.walk(upper.root, topdown=False):
        old = lower / os.path.relpath(folder, upper.root)
        if folder == upper.root or os.listdir(folder) or folder in upper.opaque:
            continue
        if old.is_dir() and not old.is_symlink():
            os.rmdir(folder)


# What the invariant compares.


def _snapshot(root: Path, skip_git: bool = True) -> dict[str, tuple]:  # type: ignore[type-arg]
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (skip_git and d == ".git")]
        for name in dirs + files:
            path = Path(folder, name)
            st = os.lstat(path)
            body = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else ""
            found[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, body)
    st = os.lstat(root)
    found["."] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, "")
    return found


def _check_final(project: dict, before: dict, goal: dict, touched: set[str]) -> None:  # type: ignore[type-arg]
    """Every path the change set touches is what the goal left, with modes as git has them; any other
    is as it was before apply."""
    for path in set(project) | set(before) | set(goal):
        if path not in touched:
            assert project.get(path) == before.get(path), f"{path}: not in the change set, yet changed"
        elif path not in goal:
            assert path not in project, f"{path}: the goal deleted it"
    for path in touched & set(goal):
        assert path in project, f"{path}: the goal made it"
        kind, mode, _, body = project[path]
        g_kind, g_mode, _, g_body = goal[path]
        assert (kind, body) == (g_kind, g_body), path
        if path in before and before[path][0] == kind and before[path][3] == body:
            was = before[path][1]
            if kind != stat.S_IFREG or bool(was & 0o100) == bool(g_mode & 0o100):
                assert mode == was, f"{path}: an unchanged path's mode changed"
                continue
        if kind == stat.S_IFDIR:
            assert mode == 0o755, path
        elif kind == stat.S_IFREG:
            assert bool(mode & 0o100) == bool(g_mode & 0o100), f"{path}: executable bit"
            kept = before.get(path, (0, -1))[1] & 0o755
            assert mode in (0o644, 0o755) or mode == kept, f"{path}: mode {mode:o}"


def _tamper(project: Path, host: tuple, outside: Path) -> None:  # type: ignore[type-arg]
    """A change on the host after the goal: a symlink to the outside, a file written, or a commit of
    the host's own (the branch moves on under the goal's commits)."""
    kind, path = host
    if kind == "commit":
        (project / "host.txt").write_text("host\n")
        _git(project, "add", "host.txt")
        _git(project, "commit", "-qm", "host")
    else:
        _act(project, ("link", path, OUTSIDE) if kind == "link" else ("write", path, b"host\n", 0o644), outside)


def _events(manifest: Manifest) -> None:
    """What the case exercised (--hypothesis-show-statistics)."""
    event(f"commits: {bool(manifest.series)}, history rewritten: {bool(manifest.git.get('rewritten'))}")
    kinds = {(e.base.kind, e.new.kind) for e in manifest.entries}
    event(f"a change of kind: {any(b not in ('absent', n) and n != 'absent' for b, n in kinds)}")
    event(f"a symlink leaving: {any(e.new.kind == 'symlink' and 'outside' in e.new.target for e in manifest.entries)}")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(base_item, max_size=6),
    steps=st.lists(step, min_size=1, max_size=10),
    host=tamper,
)
# A folder renamed over a symlink to it: below it, everything is new to the overlay.
@example(items=[("link", "a", "d"), ("file", "d/x", b"", 0o644)], steps=[("rename", "d", "a")], host=None)
def test_apply_makes_every_touched_path_its_final_state_and_nothing_outside_changes(
    state: Path,
    items: list[tuple],  # type: ignore[type-arg]
    steps: list[tuple],  # type: ignore[type-arg]
    host: tuple | None,  # type: ignore[type-arg]
) -> None:
    case = state / f"case-{time.monotonic_ns()}"
    case.mkdir()
    outside, project, goal = case / "outside", case / "project", case / "goal"
    outside.mkdir()
    (outside / "f.txt").write_text("outside\n")
    os.chmod(outside / "f.txt", 0o600)
    (outside / "d").mkdir()
    (outside / "d" / "x").write_text("x\n")
    _make_project(project, items, outside)
    started = time.time()
    shutil.copytree(project, goal, symlinks=True)
    for action in steps:
        _act(goal, action, outside)
    upper = Upper(str(case / "upper"), set(), set())
    _upper(project, goal, upper)
    _prune(upper, project)
    shutil.copytree(goal / ".git", Path(upper.root) / ".git", symlinks=True)  # as if all of it was copied up

    change_id, folder = store.new_change()
    manifest = Manifest(change_id, "goal", str(project), started, git=gitseries.start_point(str(project)))
    compute(upper, manifest, folder)
    outside_before = _snapshot(outside)
    if host is not None:
        time.sleep(0.01)  # after the goal: a change on the host the change set must not write over
        _tamper(project, host, outside)
    _events(manifest)
    before = _snapshot(project)
    head = _git(project, "rev-parse", "HEAD").stdout
    try:
        apply.apply(manifest, folder)
    except ApplyError:
        event("refused")
        assert host is not None, "a change set refused with nothing changed on the host"
        assert _snapshot(project) == before and _git(project, "rev-parse", "HEAD").stdout == head
    else:
        if host is None:
            assert set(_snapshot(project)) == set(_snapshot(goal)), "paths differ from the goal's final tree"
        touched = {p for e in manifest.entries for p in (e.path, e.origin) if p}
        _check_final(_snapshot(project), before, _snapshot(goal), touched)
        tip = manifest.git.get("tip") or head.strip()
        if host is not None and host[0] == "commit":  # the goal's commits were made again on the host's
            event(f"applied over a host commit, with commits: {bool(manifest.series)}")
            assert _git(project, "diff", "--name-only", tip, "HEAD").stdout.split() in (["host.txt"], [])
            assert _git(project, "merge-base", "--is-ancestor", head.strip(), "HEAD").returncode == 0
        else:
            assert _git(project, "rev-parse", "HEAD").stdout.strip() == tip
        assert _git(project, "diff", "--cached", "--quiet", "HEAD").returncode == 0
    assert _snapshot(outside) == outside_before, "something outside the project changed"
    shutil.rmtree(case)
