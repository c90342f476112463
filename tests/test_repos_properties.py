"""Generated cases for repositories found the way git finds them, and for flagging by what runs.

The judge of "a repository" is git itself: `git rev-parse --absolute-git-dir` run in each folder,
stopped from looking above it. Trees get repositories planted at random depths and names, with
near-misses git would not accept (a HEAD that names no ref, an objects file that cannot be searched,
a commondir to nowhere...)."""

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.workspace import apply, bind, gitdirs, paths, withhold
from nanocode.workspace.changeset import Builder, Manifest
from nanocode.workspace.overlay import HostUpper

HEX = "0123456789abcdef" * 4
HEADS = [
    "ref: refs/heads/main\n", "ref:refs/x", "ref: \t refs/tags/v1\n", HEX, HEX.upper() + "\n", HEX * 2,
    "ref: heads/main\n", "refs/heads/main\n", HEX[:39] + "\n", "", "xref: refs/heads/main", "link:refs/heads/main",
    "link:../elsewhere", "dir",
]  # fmt: skip
PARTS = ["dir", "dir", "missing", "file", "exec", "link-dir", "link-nowhere"]
FOLDER = st.lists(st.sampled_from(["a", "b", "src", "x.git", "Repo", "deep"]), max_size=3).map("/".join)
PLANT = st.tuples(
    st.sampled_from(HEADS), st.sampled_from(PARTS), st.sampled_from(PARTS), st.sampled_from(["", "good", "nowhere"])
)
TREES = st.dictionaries(FOLDER, PLANT, max_size=4)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _part(path: Path, kind: str) -> None:
    if kind in ("dir", "file", "exec") and path.is_symlink():
        path.unlink()
    if kind == "dir":
        path.mkdir(exist_ok=True)
    elif kind in ("file", "exec"):
        path.write_text("x")
        path.chmod(0o755 if kind == "exec" else 0o644)
    elif kind.startswith("link") and not path.exists():
        os.symlink("." if kind == "link-dir" else "nowhere", path)


def _plant(root: Path, tree: dict[str, tuple[str, str, str, str]]) -> None:
    for folder, (head, objects, refs, common) in sorted(tree.items()):
        here = root / folder
        here.mkdir(parents=True, exist_ok=True)
        if head == "dir":
            (here / "HEAD").mkdir(exist_ok=True)
        elif head.startswith("link:"):
            os.symlink(head[5:], here / "HEAD")
        else:
            (here / "HEAD").write_text(head)
        _part(here / "objects", objects)
        _part(here / "refs", refs)
        if common:
            (here / "commondir").write_text("shared\n" if common == "good" else "nowhere\n")
            if common == "good":
                (here / "shared" / "objects").mkdir(parents=True, exist_ok=True)
                (here / "shared" / "refs").mkdir(exist_ok=True)


def _git_says(root: Path) -> set[str]:
    """The folders git itself takes for a git directory, asked in each, never looking above it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    found = set()
    for folder, _, _ in os.walk(root):
        env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(folder)
        done = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=folder, env=env, capture_output=True)
        if done.returncode == 0 and os.path.realpath(done.stdout.decode().strip()) == os.path.realpath(folder):
            relative = os.path.relpath(folder, root)
            found.add("" if relative == "." else relative)
    return found


def _over(upper: Path, lower: Path) -> None:
    """What overlayfs shows: the upper folder's entries over the lower's, folders merged."""
    for item in upper.iterdir():
        below = lower / item.name
        if item.is_dir() and not item.is_symlink() and below.is_dir() and not below.is_symlink():
            _over(item, below)
            continue
        if below.is_dir() and not below.is_symlink():
            shutil.rmtree(below)
        elif below.is_symlink() or below.exists():
            below.unlink()
        if item.is_symlink():
            os.symlink(os.readlink(item), below)
        elif item.is_dir():
            shutil.copytree(item, below, symlinks=True)
        else:
            shutil.copy2(item, below)


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="nanocode-prop-"))


@SETTINGS
@given(TREES)
def test_a_folder_is_a_repository_exactly_when_git_takes_it_for_one(tree: dict[str, tuple[str, str, str, str]]) -> None:
    root = _scratch()
    try:
        _plant(root, tree)
        assert set(gitdirs.find(str(root)).folders) == _git_says(root)
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(TREES)
def test_bind_mode_leaves_no_repository_the_project_did_not_have(tree: dict[str, tuple[str, str, str, str]]) -> None:
    root = _scratch()
    try:
        (root / "a").mkdir()
        before = bind.snapshot(str(root))
        _plant(root, tree)
        bind.quarantine(str(root), bind.planted(str(root), before), before)
        assert _git_says(root) == set()
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(TREES, TREES)
def test_an_applied_change_set_brings_no_repository_and_withholds_only_what_would(
    base: dict[str, tuple[str, str, str, str]], goal: dict[str, tuple[str, str, str, str]]
) -> None:
    """The base may hold repositories and near-misses of its own; the goal writes more over it (what
    overlayfs would keep in its upper folder). After withholding and applying, no repository is there
    that the base did not have; and nothing is withheld when neither holds one (near-misses apply)."""
    scratch = _scratch()
    try:
        project, upper, whole = scratch / "project", scratch / "upper", scratch / "whole"
        project.mkdir()
        upper.mkdir()
        _plant(project, base)
        _plant(upper, goal)
        shutil.copytree(project, whole, symlinks=True)
        _over(upper, whole)
        had, would = _git_says(project), _git_says(whole)
        time.sleep(0.01)
        manifest = Manifest(uuid.uuid4().hex, "g", str(project), time.time())
        Builder(HostUpper(str(upper)), str(project), manifest, scratch / "change").build()
        notes = withhold.withhold(manifest, scratch / "change")
        if not had and not would:
            assert not notes and not manifest.ignored
        apply.apply(manifest, scratch / "change")
        assert _git_says(project) <= had
    finally:
        shutil.rmtree(scratch)


FLAGGED = [
    ".gitignore", ".gitattributes", ".gitmodules", ".envrc", ".tool-versions", ".mise.toml", ".vscode/settings.json",
    ".idea/workspace.xml", ".devcontainer/devcontainer.json", ".github/workflows/ci.yml", ".gitlab-ci.yml",
    ".pre-commit-config.yaml", "Makefile", "GNUmakefile", "justfile", "Taskfile.yml", "package.json", ".npmrc",
    ".yarnrc", ".yarnrc.yml", "pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "noxfile.py", "conftest.py",
    "sitecustomize.py", "usercustomize.py", "evil.pth", ".cargo/config", ".cargo/config.toml", "build.rs",
]  # fmt: skip
ORDINARY = st.from_regex(r"[a-z][a-z0-9_]{0,7}[0-9](\.(txt|md|c|rs|py|json|toml|yml|ini|cfg))?", fullmatch=True)


def _any_case(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips + [False] * len(text), strict=False))


@given(st.sampled_from(FLAGGED), st.lists(ORDINARY, max_size=4), st.lists(st.booleans(), max_size=40))
def test_flagged_names_in_any_case_at_any_depth(name: str, folders: list[str], flips: list[bool]) -> None:
    assert paths.is_flagged("/".join([*folders, _any_case(name, flips)]))


@given(st.lists(ORDINARY, min_size=1, max_size=5))
def test_ordinary_files_are_not_flagged(names: list[str]) -> None:
    assert not paths.is_flagged("/".join(names))
