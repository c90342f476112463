"""The walk that finds the project's repositories (`gitdirs.find`), over generated trees: symlinks
to folders inside and outside the project (and to its own parent), `.git` folders, gitfiles and
links in any case, folders made repositories at any depth. It follows no symlink, leaves the
project never, and finds what git and a walk that follows nothing find."""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.workspace import bind, gitdirs, handles

NAMES = ["a", "b", ".git", ".GIT", "x.git", "HEAD", "objects"]
KINDS = ["dir", "file", "gitfile", "repo", "repo", "link-in", "link-out", "link-up", "link-repo-out"]
TREES = st.dictionaries(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join), st.sampled_from(KINDS), max_size=10
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _repo(folder: Path) -> None:
    """A folder git takes for a git directory: a HEAD naming a ref, `objects` and `refs`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("objects", "refs"):
        if not os.path.lexists(folder / name):
            (folder / name).mkdir()
    if not os.path.lexists(folder / "HEAD"):
        (folder / "HEAD").write_text("ref: refs/heads/main\n")


def _outside(base: Path) -> Path:
    """A folder beside the project holding what the walk must never report: a repository, a `.git`."""
    outside = base / "outside"
    _repo(outside)
    _repo(outside / ".git")
    _repo(outside / "inner")
    return outside


def _make(root: Path, outside: Path, tree: dict[str, str]) -> None:
    for rel, kind in sorted(tree.items()):
        path = root / rel
        on_the_way = [p for p in path.parents if root in p.parents]
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in on_the_way) or os.path.lexists(path):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir()
        elif kind == "repo":
            _repo(path)
        elif kind == "file":
            path.write_text("x")
        elif kind == "gitfile":
            path.write_text("gitdir: ../x.git\n")
        else:
            target = {"link-in": root / "a", "link-out": outside, "link-up": "..", "link-repo-out": outside / ".git"}
            os.symlink(target[kind], path)


def _model(root: Path) -> gitdirs.Found:
    """A walk that follows no symlink and enters no `.git`: every `.git` and repository-own name."""
    found = gitdirs.Found()
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = os.path.relpath(folder, root)
        here = "" if here == "." else here
        for name in [*dirs, *files]:
            if gitdirs.is_dot_git(name):
                found.dot_gits.append(os.path.join(here, name))
            if name in gitdirs.REPO_OWN:
                found.owned.append(os.path.join(here, name))
        dirs[:] = [d for d in dirs if not gitdirs.is_dot_git(d)]
        if _git_takes(Path(folder)):
            found.folders.append(here)
    for names in (found.dot_gits, found.owned, found.folders):
        names.sort()
    return found


def _git_takes(folder: Path) -> bool:
    """git's own answer: is `folder` a git directory (`git --git-dir=folder`, nothing looked above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    command = ["git", f"--git-dir={folder}", "rev-parse", "--absolute-git-dir"]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True).returncode == 0


@SETTINGS
@given(tree=TREES)
def test_the_walk_finds_what_git_and_a_walk_that_follows_nothing_find_and_never_leaves_the_project(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, str]
) -> None:
    base = tmp_path_factory.mktemp("w")
    root = base / "p"
    root.mkdir()
    _make(root, _outside(base), tree)
    found = gitdirs.find(str(root))
    assert found == _model(root)
    for path in [*found.dot_gits, *found.owned, *found.folders]:
        on_the_way = [root / path, *(p for p in (root / path).parents if root in p.parents)][1:]
        assert not any(p.is_symlink() for p in on_the_way), path


def test_a_folder_swapped_for_a_symlink_while_the_walk_runs_is_not_entered(tmp_path: Path) -> None:
    """Each folder is opened through the handle of the one above it, with O_NOFOLLOW: a folder the
    walk listed, made a symlink to a repository elsewhere before it is entered, leads it nowhere."""
    root, outside = tmp_path / "p", _outside(tmp_path)
    (root / "a" / "b").mkdir(parents=True)
    failed: list[str] = []
    walk = handles.walk(str(root), lambda path: True, lambda path, exc: failed.append(path))
    folder, entries = next(walk)
    assert folder == "" and [item.name for item in entries] == ["a"]
    (root / "a").rename(tmp_path / "moved")
    os.symlink(outside, root / "a")
    assert [folder for folder, _ in walk] == [] and failed == []  # not a folder now: nothing to check
    assert gitdirs.find(str(root)).folders == [] and gitdirs.find(str(root)).dot_gits == []


def test_a_folder_the_walk_let_go_and_must_reopen_is_the_very_folder_it_was_or_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one handle held below the top, the walk reopens `a/b` by name to enter its second
    folder: `a/b` replaced meanwhile by another folder is not walked as if it were the first, and
    the walk says so."""
    root = tmp_path / "p"
    for name in ("c", "e"):
        (root / "a" / "b" / name).mkdir(parents=True)
    monkeypatch.setattr(handles, "HELD", 1)
    failed: list[tuple[str, int | None]] = []
    walk = handles.walk(str(root), lambda path: True, lambda path, exc: failed.append((path, exc.errno)))
    assert [next(walk)[0] for _ in range(4)][:3] == ["", "a", "a/b"]
    (root / "a" / "b").rename(root / "a" / "old")
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "e").mkdir()
    assert list(walk) == [] and failed == [("a/b", errno.ESTALE)]


def test_a_project_that_is_gone_holds_no_repository(tmp_path: Path) -> None:
    assert gitdirs.find(str(tmp_path / "gone")) == gitdirs.Found()


@pytest.mark.parametrize("planted", ["sub/.git", "sub/deep/.git", "sub/repo", "sub/deep/repo"])
def test_a_folder_swapped_for_a_symlink_before_the_move_aside_stops_it_inside_the_project(
    planted: str, tmp_path: Path
) -> None:
    """What bind mode moves aside is reached through folder handles: a folder on the way made a
    symlink to a repository elsewhere (by another goal's sandbox, still running) moves nothing there."""
    root, outside = tmp_path / "p", _outside(tmp_path)
    (outside / "deep").mkdir()
    _repo(outside / "deep" / ".git")
    _repo(outside / "deep" / "repo")
    _repo(outside / "repo")
    root.mkdir()
    before = bind.snapshot(str(root))
    _repo(root / planted)
    keys = bind.planted(str(root), before)
    there = sorted(str(p.relative_to(tmp_path)) for p in outside.rglob("*"))
    (root / "sub").rename(tmp_path / "moved")
    os.symlink(outside, root / "sub")
    with pytest.raises(bind.QuarantineFailed) as refused:
        bind.quarantine(str(root), keys, before)
    assert "is a symlink" in refused.value.format_message()
    assert sorted(str(p.relative_to(tmp_path)) for p in outside.rglob("*")) == there


NOBODY = 65534
MOVE = (
    "import sys; from nanocode.workspace import bind; before = bind.Snapshot(); "
    "print(len(bind.quarantine(sys.argv[1], bind.planted(sys.argv[1], before), before)))"
)


@pytest.mark.skipif(not shutil.which("setpriv"), reason="the move runs as another user, by setpriv")
def test_what_the_sandbox_locked_is_opened_to_its_owner_and_moved_aside() -> None:
    """The sandbox runs as the user and may lock the folders it made (no write, or no access at all):
    they are opened to the user through their handles, and what git would read still goes aside.
    Root needs no opening: the move runs as another user here."""
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        project = base / "p"
        _repo(project / "sub" / ".git")
        _repo(project / "r")
        for path in [project, *project.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        (project / "sub" / ".git").chmod(0)
        (project / "sub").chmod(0o500)
        (project / "r").chmod(0o500)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        command = [*as_nobody, sys.executable, "-c", MOVE, str(project)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0 and done.stdout.split() == ["2"], done.stderr
        assert not os.path.lexists(project / "sub" / ".git") and not (project / "r" / "HEAD").exists()
        [aside] = (project / "sub").iterdir()
        assert aside.name.startswith(".git.nanocode-quarantine-") and not (aside / "HEAD").exists()
    finally:
        shutil.rmtree(base)
