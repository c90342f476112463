"""The ways a sandboxed goal made a later host `git status` run a command it planted: in bind mode,
in overlay mode applied by `apply last`, and in overlay mode applied by the goal itself (`-p --apply`).

Each attack plants a `core.fsmonitor` command that writes a marker file outside the project; after
the goal (and after `apply` in overlay mode), host git runs in every folder of the project and the
marker must not exist.
"""

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from docker.errors import DockerException

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import env, git, host_git_status_runs_nothing, nanocode, repo, workspace_options

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")
IDENT = "git -c user.name=m -c user.email=m@x"


def _evil_repo(folder: str, marker: Path) -> str:
    """Shell that makes `folder` a git repo whose config runs a command on the host."""
    return f"git init -q {folder} && git -C {folder} config core.fsmonitor 'touch {marker}; false'"


def _bare_repo(folder: str, marker: Path) -> str:
    """Shell that makes `folder` itself a repository, with no `.git`, whose config runs a command."""
    config = f"git config -f {folder}/config"
    return (
        f"git init -q --bare {folder} && {config} core.bare false && {config} core.worktree $(cd {folder}; pwd) && "
        f"{config} core.fsmonitor 'touch {marker}; false'"
    )


@pytest.fixture(params=["bind", "overlay", "overlay --apply"])
def mode(request: pytest.FixtureRequest) -> str:
    """The workspace, and for overlay whether the goal applies its change set itself (-p --apply)."""
    return str(request.param)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where a planted command would leave its trace."""
    return tmp_path / "pwned"


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


def _goal(tmp_path: Path, api: ScriptedAPI, project: Path, mode: str, script: str) -> Any:
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = nanocode(tmp_path, api, *workspace_options(mode), "-p", "attack", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr
    return done


def _after(tmp_path: Path, project: Path, mode: str, marker: Path, git_folder: Path | None, before: str) -> None:
    """The host's git folder is as it was after the goal, and after `apply` (overlay mode); then host
    git runs nothing planted."""
    if git_folder:
        assert _tree_digest(git_folder) == before
    if mode == "overlay":  # with --apply, the goal applied it already
        applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
        assert "internal error" not in applied.stderr
        if git_folder:
            assert _tree_digest(git_folder) == before
    host_git_status_runs_nothing(project, marker)


def test_1_a_nested_repo_added_as_a_gitlink(mode: str, marker: Path, api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    index = (project / ".git" / "index").read_bytes()
    before = _tree_digest(project / ".git")
    script = (
        f"mkdir sub && {_evil_repo('sub', marker)} && {IDENT} -C sub commit -q --allow-empty -m x; "
        "git update-index --add --cacheinfo 160000,$(git -C sub rev-parse HEAD),sub; true"
    )
    done = _goal(tmp_path, api, project, mode, script)
    assert (project / ".git" / "index").read_bytes() == index
    if mode == "bind":
        assert not (project / "sub" / ".git").exists() and "moved to" in done.stderr
    _after(tmp_path, project, mode, marker, project / ".git", before)


def test_2_a_planted_commondir(mode: str, marker: Path, api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    before = _tree_digest(project / ".git")
    script = f"{_evil_repo('evil', marker)}; echo {project}/evil/.git > .git/commondir; true"
    _goal(tmp_path, api, project, mode, script)
    assert not (project / ".git" / "commondir").exists()
    _after(tmp_path, project, mode, marker, project / ".git", before)


def test_3_planted_then_killed(mode: str, marker: Path, docker_engine: Any, api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    before = _tree_digest(project / ".git")
    script = (
        f"{_evil_repo('evil', marker)}; echo {project}/evil/.git > .git/commondir; "
        f"mkdir -p sub && {_evil_repo('sub', marker)}; {_bare_repo('bare', marker)}; touch {project}/planted; sleep 300"
    )
    api.add(tools(call("shell", {"command": script})))
    command = [sys.executable, "-m", "nanocode", *workspace_options(mode), "-p", "g", "--project", str(project)]
    process = subprocess.Popen(command, env=env(tmp_path, api), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _planted(docker_engine, process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None and _planted(docker_engine, process.pid), "the goal did not plant"
    process.kill()
    process.communicate()
    api.add(message(f"{MARKER} next"))
    done = nanocode(tmp_path, api, "--sandbox", "-p", "next", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert not (project / ".git" / "commondir").exists() and not (project / "sub" / ".git").exists()
    assert not (project / "bare" / "HEAD").exists()
    if mode == "bind":
        assert "moved to" in done.stderr
    assert _tree_digest(project / ".git") == before
    host_git_status_runs_nothing(project, marker)


def _planted(docker_engine: Any, pid: int) -> bool:
    from nanocode.sandbox.container import ours

    for c in ours(docker_engine):
        if c.labels.get("nanocode.owner.pid") == str(pid):
            try:
                command = ["sh", "-c", "test -e planted && echo PLANTED"]
                result = docker_engine.api.exec_create(c.id, command, workdir=c.labels["nanocode.project"])
                return b"PLANTED" in docker_engine.api.exec_start(result["Id"])
            except DockerException:
                return False  # not running yet, or made again
    return False


def test_4_git_init_in_a_project_without_git(mode: str, marker: Path, api: ScriptedAPI, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    _goal(tmp_path, api, project, mode, f"{_evil_repo('.', marker)} && echo b > b.txt")
    assert not (project / ".git").exists()
    _after(tmp_path, project, mode, marker, None, "")
    assert not (project / ".git").exists()


def test_5_a_project_inside_a_host_repo(mode: str, marker: Path, api: ScriptedAPI, tmp_path: Path) -> None:
    outer = repo(tmp_path / "outer", {"top.txt": "t\n"})
    project = outer / "project"
    project.mkdir()
    (project / "a.txt").write_text("a\n")
    before = _tree_digest(outer / ".git")
    _goal(tmp_path, api, project, mode, _evil_repo(".", marker))
    assert not (project / ".git").exists()
    _after(tmp_path, project, mode, marker, outer / ".git", before)
    assert not (project / ".git").exists()


def test_6_a_linked_worktree_whose_gitfile_is_rewritten(
    mode: str, marker: Path, api: ScriptedAPI, tmp_path: Path
) -> None:
    main = repo(tmp_path / "main", {"a.txt": "a\n"})
    project = tmp_path / "p"
    git(main, "worktree", "add", "-q", str(project))
    gitfile = (project / ".git").read_text()
    before = _tree_digest(main / ".git")
    script = f"{_evil_repo('evil', marker)}; echo 'gitdir: {project}/evil/.git' > .git; true"
    _goal(tmp_path, api, project, mode, script)
    assert (project / ".git").read_text() == gitfile
    _after(tmp_path, project, mode, marker, main / ".git", before)
    assert (project / ".git").read_text() == gitfile


@pytest.mark.parametrize("repository", ["a .git", "a repository folder"])
def test_7_the_folder_above_a_repository_renamed_and_another_made_at_its_path(
    marker: Path, api: ScriptedAPI, tmp_path: Path, repository: str
) -> None:
    # The read-only mount of the user's repository goes with the folder above it, renamed: what is
    # made at its path is the goal's, even a copy alike in every file, and is moved aside.
    project = tmp_path / "p"
    (project / "outer").mkdir(parents=True)
    if repository == "a .git":
        repo(project / "outer" / "sub", {"s.txt": "s\n"})
        plant = f"mkdir -p outer/sub && {_evil_repo('outer/sub', marker)}"
    else:
        subprocess.run(["git", "init", "-q", "--bare", str(project / "outer" / "sub")], check=True)
        plant = "mkdir outer && cp -a outer2/sub outer/sub"
    done = _goal(tmp_path, api, project, "bind", f"mv outer outer2 && {plant}; true")
    assert "moved to" in done.stderr and (project / "outer2").is_dir(), done.stderr
    host_git_status_runs_nothing(project, marker)
