"""Bind mode's walk of the project when a goal ends (`bindflags.walk`), the one both the setuid
clean-up and the flagged-change warning read: generated trees with symlinks to folders inside and
outside the project, `.git`s in any case and nested, of which only those there at the start are left
out; trees deeper than the handles a process may hold."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.workspace import bindflags, handles

NAMES = ["a", "b", "src", ".git", ".GIT", "x.nanocode-quarantine-1", "Makefile", "run.sh"]
KINDS = ["dir", "file", "exec", "setuid", "link-in", "link-out", "link-up"]
TREES = st.dictionaries(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join), st.sampled_from(KINDS), max_size=12
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _make(root: Path, outside: Path, tree: dict[str, str]) -> None:
    for rel, kind in sorted(tree.items()):
        path = root / rel
        on_the_way = [p for p in path.parents if root in p.parents]
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in on_the_way):
            continue  # a file or a link on the way: made through no link, as a sandbox's would be here
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            continue
        if kind == "dir":
            path.mkdir()
        elif kind.startswith("link"):
            target = {"link-in": str(root / "a"), "link-out": str(outside), "link-up": ".."}[kind]
            os.symlink(target, path)
        else:
            path.write_text("x")
            path.chmod({"file": 0o644, "exec": 0o755, "setuid": 0o4755}[kind])


def _expected(root: Path, keep: set[str]) -> dict[str, int]:
    """What a walk that follows no symlink finds: every path but those of `keep` and what they hold."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        below = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if str(below / d) not in keep]
        for name in [*dirs, *files]:
            if str(below / name) not in keep:
                found[str(below / name)] = os.lstat(Path(folder, name)).st_mode
    return found


def _walk(root: Path, keep: set[str], **options: bool) -> bindflags.Seen:
    warnings: list[str] = []
    seen = bindflags.walk(str(root), bindflags.kept(str(root), keep), warnings.append, **options)
    assert warnings == []
    return seen


@SETTINGS
@given(tree=TREES, held=st.sampled_from([1, 2, handles.HELD]))
def test_the_walk_finds_every_path_but_the_gits_there_at_the_start_and_enters_no_symlink(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, str], held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `.git`s there at the start are every `.git` in lower case here: the others (`.GIT`, one
    inside another) are walked as any folder. `held`: the handles the walk may keep open, the rest
    reopened from those it keeps."""
    root = tmp_path_factory.mktemp("p")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("s")
    _make(root, outside, tree)
    keep = {path for path in tree if path.split("/")[-1] == ".git"}
    monkeypatch.setattr(handles, "HELD", held)
    seen = _walk(root, keep)
    assert {path: st.st_mode for path, st in seen} == _expected(root, keep)
    assert len(seen) == len({path for path, _ in seen})
    assert not [path for path, _ in seen if "secret" in path]
    assert {path for path, _ in _walk(root, keep, stat=False)} == {path for path, _ in seen}


def test_the_setuid_clean_up_and_the_warning_read_one_walk_as_they_would_their_own(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "d").mkdir(parents=True)
    (project / "old.sh").write_text("x")
    since = time.time() - 1
    (project / "Makefile").write_text("all:\n")
    (project / "d" / "s").write_text("x")
    (project / "d" / "s").chmod(0o6755)
    os.symlink("../Makefile", project / "d" / "build")
    seen = _walk(project, set())
    assert bindflags.unset_special(str(project), since, seen) == ["d/s"]
    assert stat.S_IMODE((project / "d" / "s").stat().st_mode) == 0o755
    assert bindflags.changed(str(project), since, ["gone.cfg"], seen) == bindflags.changed(
        str(project), since, ["gone.cfg"], _walk(project, set())
    )
    assert {"Makefile", "d/build", "d/s", "gone.cfg"} <= set(bindflags.changed(str(project), since, ["gone.cfg"], seen))


NOBODY = 65534
WALK = (
    "import sys; from nanocode.workspace import bindflags as b; "
    "print(*[p for p, _ in b.walk(sys.argv[1], {}, print, unlock=float(sys.argv[2]))])"
)


@pytest.mark.skipif(not shutil.which("setpriv"), reason="the walk runs as another user, by setpriv")
@pytest.mark.parametrize("by", ["the goal", "the user"])
def test_a_folder_the_goal_locked_is_opened_to_its_owner_and_walked_and_one_the_user_locked_is_not(by: str) -> None:
    """The sandbox runs as the user and may lock a folder of theirs (mode 000): the walk opens it to
    them rather than skip what it holds, if it changed since the goal started; one locked before is
    the user's own doing, left locked and named. Root opens any: the walk runs as another user here."""
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        project = base / "p"
        (project / "locked" / "in").mkdir(parents=True)
        (project / "locked" / "in" / "s").write_text("x")
        for path in (project, project / "locked", project / "locked" / "in", project / "locked" / "in" / "s"):
            os.chown(path, NOBODY, NOBODY)
        (project / "locked").chmod(0)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        started = time.time() + (60 if by == "the user" else -60)  # the goal's start: after the lock, or before
        command = [*as_nobody, sys.executable, "-c", WALK, str(project), str(started)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        if by == "the goal":
            assert done.stdout.split() == ["locked", "locked/in", "locked/in/s"]
            assert stat.S_IMODE((project / "locked").stat().st_mode) == 0o700
        else:
            assert "could not check locked" in done.stdout and "locked/in" not in done.stdout.split()
            assert stat.S_IMODE((project / "locked").stat().st_mode) == 0
    finally:
        shutil.rmtree(base)


PLANTED = ["sub/.git/hooks", "sub/.git/x/.git", "sub/.git/x/.GIT/y", "sub/.GIT/x/.git", "x.nanocode-quarantine-1"]


def test_a_setuid_file_anywhere_in_a_git_the_goal_made_loses_its_bits_and_one_there_at_the_start_is_left(
    tmp_path: Path,
) -> None:
    """What bind mode moves aside is the goal's too: a `.git` it made goes aside whole, and what it
    holds is walked, `.git`s inside it included; a folder the goal names as bind mode names its
    quarantine hides nothing. A `.git` there at the start (read-only while the goal ran) is not
    entered: nothing in it is the goal's."""
    from nanocode.workspace.workspace import Workspace

    project = tmp_path / "p"
    (project / "old" / ".git").mkdir(parents=True)
    (project / "old" / ".git" / "s").write_text("x")
    notes: list[str] = []
    workspace = Workspace(None, str(project), "g", notes.append)  # type: ignore[arg-type]
    workspace.started -= 1  # a file's times are the kernel's coarse clock, behind time.time() by a tick
    workspace.open()
    (project / "old" / ".git" / "s").chmod(0o6777)  # as host git or the user might, not the sandbox
    for folder in PLANTED:
        (project / folder).mkdir(parents=True)
        (project / folder / "s").write_text("x")
        (project / folder / "s").chmod(0o6777)
    workspace.finish("g", "complete")
    setuid = [str(p.relative_to(project)) for p in project.rglob("s") if p.stat().st_mode & 0o6002]
    assert setuid == ["old/.git/s"] and len(list(project.rglob("s"))) == len(PLANTED) + 1, notes
    assert any("moved to" in note for note in notes) and any("setuid" in note for note in notes), notes


def test_a_git_made_where_one_was_at_the_start_is_walked_when_the_sandbox_renamed_the_folder_holding_it(
    tmp_path: Path,
) -> None:
    """A `.git` there at the start is mounted read-only, but the folder that holds it is not: the
    sandbox can rename that folder and make another `.git` of the same path. The walk leaves out a
    kept `.git` only while it is the very inode it was, and a recovery reads that from the journal."""
    from nanocode.workspace.workspace import Workspace

    project = tmp_path / "p"
    (project / "sub" / ".git").mkdir(parents=True)
    notes: list[str] = []
    workspace = Workspace(None, str(project), "g", notes.append)  # type: ignore[arg-type]
    workspace.started -= 1
    workspace.open()
    assert bindflags.kept_of(json.loads(json.dumps(workspace.kept))) == workspace.kept != {}
    (project / "sub").rename(project / "moved")
    (project / "sub" / ".git").mkdir(parents=True)
    (project / "sub" / ".git" / "s").write_text("x")
    (project / "sub" / ".git" / "s").chmod(0o6777)
    workspace.finish("g", "complete")
    (planted,) = (project / "sub").iterdir()  # not the user's: moved aside as the goal's
    assert planted.name.startswith(".git.") and stat.S_IMODE((planted / "s").stat().st_mode) == 0o775, notes


DEEP = """
import json, resource, sys
from nanocode.workspace import bindflags
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[2])))
warnings = []
seen = bindflags.walk(sys.argv[1], {}, warnings.append)
print(json.dumps({"done": bindflags.unset_special(sys.argv[1], 0, seen), "warnings": warnings}))
"""


def _deep(root: Path, depth: int) -> list[str]:
    """A chain of folders `d` `depth` levels down, each also holding a folder `e` with a setuid file
    in it (so that the walk comes back to each level); the setuid files' paths below `root`."""
    fd, made = os.open(root, os.O_RDONLY), []
    for level in range(depth):
        for name in ("e", "d"):
            os.mkdir(name, dir_fd=fd)
        inner = os.open("e", os.O_RDONLY, dir_fd=fd)
        os.close(os.open("s", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=inner))
        os.chmod("s", 0o6755, dir_fd=inner)
        os.close(inner)
        made.append("/".join(["d"] * level + ["e", "s"]))
        fd, up = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(up)
    os.close(fd)
    return made


def _walk_with_few_handles(root: Path, limit: int) -> dict[str, list[str]]:
    command = [sys.executable, "-c", DEEP, str(root), str(limit)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "p"
    root.mkdir()
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=True)  # deeper than shutil.rmtree's recursion goes


def test_a_tree_deeper_than_the_handles_a_process_may_hold_is_walked_whole(deep_root: Path) -> None:
    paths = _deep(deep_root, 400)
    found = _walk_with_few_handles(deep_root, 128)
    assert sorted(found["done"]) == sorted(paths) and found["warnings"] == [], found["warnings"][:3]
    assert all(stat.S_IMODE(os.lstat(deep_root / path).st_mode) == 0o755 for path in paths)


def test_a_folder_the_walk_cannot_open_is_said_never_skipped_in_silence(deep_root: Path) -> None:
    """With fewer handles than the walk keeps, it cannot open every folder: each setuid file it did
    not clean is below a folder a warning names."""
    paths = _deep(deep_root, handles.HELD + 20)
    found = _walk_with_few_handles(deep_root, handles.HELD // 2)
    named = [line.split("could not check ")[1].split(" for setuid")[0] + "/" for line in found["warnings"]]
    left = [path for path in paths if path not in found["done"]]
    assert left and all(any(path.startswith(folder) for folder in named) for path in left), found


ALIKE = ["a", "x.nanocode-quarantine-1", ".nanocode-quarantine-0123456789abcdef", ".git.nanocode-quarantine-feed"]
PLANTS = ["Makefile", ".git", "repo"]  # a flagged file; a `.git` (moved aside whole); a folder made a repository
GOALS = st.dictionaries(
    st.lists(st.sampled_from(ALIKE), min_size=1, max_size=3).map("/".join), st.sampled_from(PLANTS), max_size=5
)


def _plant(folder: Path, plant: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if plant == "Makefile":
        (folder / "Makefile").write_text("all:\n")
        return
    hooks = folder / ".git" / "hooks" if plant == ".git" else folder / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "Makefile").write_text("all:\n")
    (hooks.parent / "HEAD").write_text("ref: refs/heads/main\n")
    (hooks.parent / "objects").mkdir(exist_ok=True)
    (hooks.parent / "refs").mkdir(exist_ok=True)


@SETTINGS
@given(goal=GOALS)
def test_the_warning_leaves_out_only_what_nanocode_moved_aside_whatever_the_names(
    tmp_path_factory: pytest.TempPathFactory, goal: dict[str, str]
) -> None:
    """Every Makefile the goal left where host tools find it is named, below any look-alike of the
    quarantine's name; none of those nanocode moved aside (into a `.git` or a repository) is."""
    from nanocode.workspace.workspace import Workspace

    project = tmp_path_factory.mktemp("p")
    notes: list[str] = []
    workspace = Workspace(None, str(project), "g", notes.append)  # type: ignore[arg-type]
    workspace.started -= 1  # a file's times are the kernel's coarse clock, behind time.time() by a tick
    workspace.open()
    for folder, plant in sorted(goal.items()):
        _plant(project / folder, plant)
    workspace.finish("g", "complete")
    left = {str(p.relative_to(project)) for p in project.rglob("Makefile")}
    targets = [note.split("moved to ")[1] for note in notes if "moved to" in note]
    aside = [str(Path(t).relative_to(project)) + "/" for t in targets]
    runs = {path for path in left if not any(path.startswith(top) for top in aside)}
    moved = {path for path in left if path not in runs}
    warning = next((note for note in notes if "host tools run" in note), "themselves: ")
    listed = set(warning.split("themselves: ")[1].split(" [runs")[0].strip().split(", "))
    assert not listed & moved, (listed, moved)
    assert runs <= listed, (runs, listed)


def test_a_path_nanocode_moved_something_to_is_left_out_only_while_it_is_that_very_inode(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "q").mkdir(parents=True)
    since = time.time() - 1
    aside = bindflags.own(str(project), [str(project / "q")])
    (project / "q" / "Makefile").write_text("all:\n")
    assert bindflags.changed(str(project), since, [], _walk(project, set()), aside) == []
    (project / "q").rename(tmp_path / "kept")  # kept: its inode is not given to the next folder
    (project / "q").mkdir()  # the same name, another folder: walked as any other
    (project / "q" / "Makefile").write_text("all:\n")
    (project / "x").mkdir()
    os.link(project / "q" / "Makefile", project / "x" / "Makefile")  # an inode nanocode moved, by another name
    aside |= bindflags.own(str(project), [str(project / "x" / "Makefile")])
    assert bindflags.changed(str(project), since, [], _walk(project, set()), aside) == ["q/Makefile"]


def test_a_bind_goal_whose_project_was_removed_while_it_ran_ends_with_what_is_gone(tmp_path: Path) -> None:
    from nanocode.workspace.workspace import Workspace

    project = tmp_path / "p"
    project.mkdir()
    (project / "Makefile").write_text("all:\n")
    notes: list[str] = []
    workspace = Workspace(None, str(project), "g", notes.append)  # type: ignore[arg-type]
    workspace.open()
    shutil.rmtree(project)
    assert workspace.finish("g", "complete") is None
    assert [note for note in notes if "host tools run" in note and "Makefile" in note], notes


def test_a_flagged_file_now_reached_only_through_a_symlink_is_gone(tmp_path: Path) -> None:
    """`make -C d` ran d/Makefile; with `d` made a link to `e`, it runs another file: said as gone."""
    project = tmp_path / "p"
    for folder in ("d", "e"):
        (project / folder).mkdir(parents=True)
        (project / folder / "Makefile").write_text(f"{folder}:\n")
    before = bindflags.flagged_names(str(project), {}, print)
    since = time.time() + 1  # nothing else counts as changed
    (project / "d").rename(tmp_path / "d")
    os.symlink("e", project / "d")
    assert bindflags.changed(str(project), since, before, _walk(project, set())) == ["d/Makefile"]


def test_a_users_repository_the_goal_moved_with_its_folder_stays_where_it_is_now(tmp_path: Path) -> None:
    """The sandbox renamed the folder above the user's `.git` (its read-only mount went along): the
    very folder, at a new path, is the user's still, not moved aside as planted."""
    from nanocode.workspace.workspace import Workspace

    project = tmp_path / "p"
    (project / "a" / ".git").mkdir(parents=True)
    notes: list[str] = []
    workspace = Workspace(None, str(project), "g", notes.append)  # type: ignore[arg-type]
    workspace.open()
    (project / "a").rename(project / "b")
    workspace.finish("g", "complete")
    workspace.close()
    assert [p.name for p in (project / "b").iterdir()] == [".git"] and not notes, notes
