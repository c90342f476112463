"""The walk that finds the project's repositories (`gitdirs.find`), over generated trees: symlinks
to folders inside and outside the project (and to its own parent), `.git` folders, gitfiles and
links in any case, folders made repositories at any depth. It follows no symlink, leaves the
project never, and finds what git and a walk that follows nothing find."""

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.workspace import gitdirs, handles

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
    walk = handles.walk(str(root), enter=lambda name: True)
    folder, entries = next(walk)
    assert folder == "" and [item.name for item in entries] == ["a"]
    (root / "a").rename(tmp_path / "moved")
    os.symlink(outside, root / "a")
    assert [folder for folder, _ in walk] == []
    assert gitdirs.find(str(root)).folders == [] and gitdirs.find(str(root)).dot_gits == []


def test_a_project_that_is_gone_holds_no_repository(tmp_path: Path) -> None:
    assert gitdirs.find(str(tmp_path / "gone")) == gitdirs.Found()
