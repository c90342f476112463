"""A goal's commits turn a project path into a symlink to a host file or folder outside the project,
and its uncommitted work then acts on that path: applying must change nothing outside the project,
whether the change set is applied by `nanocode apply last` or by `-p --apply`.
"""

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import git, nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
IDENT = "git -c user.name=m -c user.email=m@x"
HOW = ["apply last", "-p --apply"]


def _link_in_a_commit(path: str, target: Path) -> str:
    """Shell that commits `path` as a symlink to `target`, leaving the working tree as it is."""
    blob = f"$(printf %s {target} | git hash-object -w --stdin)"
    index = f"git rm -rq --cached {path} && git update-index --add --cacheinfo 120000,{blob},{path}"
    return f"{index} && {IDENT} commit -qm link"


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (os.lstat(p).st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


def _goal_then_apply(tmp_path: Path, api: ScriptedAPI, project: Path, how: str, script: str) -> Any:
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    goal = ["--sandbox", "--workspace", "overlay", "-p", "attack", "--project", str(project)]
    done = nanocode(tmp_path, api, *goal, *(["--apply"] if how == "-p --apply" else []))
    assert done.returncode == 0, done.stderr
    if how == "apply last":
        done = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    return done


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.txt").write_text("outside\n")
    (folder / "secret").write_text("mine\n")
    os.chmod(folder / "secret", 0o600)
    return folder


@pytest.mark.parametrize("how", HOW)
def test_a_mode_change_on_a_path_a_commit_made_a_symlink_stays_inside(
    how: str, docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path, outside: Path
) -> None:
    project = repo(tmp_path / "p", {"run.sh": "echo\n", "a.txt": "a\n"})
    before = _snapshot(outside)
    done = _goal_then_apply(
        tmp_path, api, project, how, f"{_link_in_a_commit('run.sh', outside / 'secret')} && chmod 4777 run.sh"
    )
    assert _snapshot(outside) == before
    assert stat.S_IMODE(os.stat(outside / "secret").st_mode) == 0o600
    if done.returncode == 0:  # applied: the path is what the goal left, a regular file, executable as git has it
        st = os.lstat(project / "run.sh")
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    else:
        assert done.returncode == 6 and "run.sh" in done.stderr


@pytest.mark.parametrize("how", HOW)
def test_a_delete_below_a_folder_a_commit_made_a_symlink_stays_inside(
    how: str, docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path, outside: Path
) -> None:
    project = repo(tmp_path / "p", {"d/f.txt": "inside\n", "d/g.txt": "g\n", "a.txt": "a\n"})
    before = _snapshot(outside)
    done = _goal_then_apply(tmp_path, api, project, how, f"{_link_in_a_commit('d', outside)} && rm d/f.txt")
    assert _snapshot(outside) == before
    if done.returncode == 0:
        assert os.path.isdir(project / "d") and not os.path.islink(project / "d")
        assert not (project / "d" / "f.txt").exists() and (project / "d" / "g.txt").read_text() == "g\n"
    else:
        assert done.returncode == 6 and "d/f.txt" in done.stderr
    assert git(project, "status", "--porcelain") is not None


def _outside_repo(tmp_path: Path) -> tuple[Path, str]:
    """A clone outside the project with a private commit of its own."""
    other = repo(tmp_path / "other", {"a.txt": "a\n"})
    (other / "private.txt").write_text("private\n")
    git(other, "add", "private.txt")
    git(other, "commit", "-qm", "private")
    return other, git(other, "rev-parse", "HEAD").strip()


@pytest.mark.parametrize(
    "script",
    [
        "rm -rf .git && ln -s {other}/.git .git",
        "rm -rf .git/objects && ln -s {other}/.git/objects .git/objects && {ident} commit -qam wip",
        "echo 'gitdir: {other}/.git' > .git.file && rm -rf .git && mv .git.file .git",
    ],
    ids=["git-symlink", "objects-symlink", "gitfile"],
)
def test_a_repository_the_goal_replaced_is_not_read(
    script: str, docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    head = git(project, "rev-parse", "HEAD")
    other, private = _outside_repo(tmp_path)
    command = "echo b > a.txt && " + script.format(other=other, ident=IDENT)
    done = _goal_then_apply(tmp_path, api, project, "-p --apply", command)
    assert done.returncode == 0, done.stderr
    assert "replaced its repository" in done.stderr
    assert git(project, "rev-parse", "HEAD") == head and (project / ".git").is_dir()
    has = subprocess.run(["git", "cat-file", "-e", private], cwd=project, capture_output=True)
    assert has.returncode != 0, "a commit of a repository outside the project reached it"
    assert (project / "a.txt").read_text() == "b\n"
