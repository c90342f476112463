"""A repository without a `.git`: the sandbox writes HEAD, objects/, refs/ and a config (with
core.worktree and core.fsmonitor) straight into the project's top and a subfolder. On the real
engine, in bind mode, overlay mode with `apply last`, and overlay with `-p --apply`; for a project
with no `.git` and one inside a host repository. Afterwards host `git status` runs nothing planted."""

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from nanocode.errors import ApplyError
from nanocode.prompts import MARKER
from nanocode.workspace import apply, bind, withhold
from nanocode.workspace.changeset import Builder, Manifest
from nanocode.workspace.overlay import HostUpper
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import git, host_git_status_runs_nothing, nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
WAYS = [("bind",), ("overlay",), ("overlay", "--apply")]
IDENT = "git -c user.name=m -c user.email=m@x"


def _bare(folder: str, marker: Path) -> str:
    """Shell that makes `folder` itself a repository (no .git) whose config runs a command on the host."""
    config = f"git config -f {folder}/config"
    return (
        f"git init -q --bare {folder} && {config} core.bare false && {config} core.worktree $(cd {folder}; pwd) && "
        f"{config} core.fsmonitor 'touch {marker}; false'"
    )


def _project(tmp_path: Path, inside_a_repo: bool) -> Path:
    project = repo(tmp_path / "outer", {"top.txt": "t\n"}) / "project" if inside_a_repo else tmp_path / "project"
    project.mkdir(parents=True)
    (project / "a.txt").write_text("a\n")
    return project


@pytest.mark.parametrize("way", WAYS, ids="-".join)
@pytest.mark.parametrize("inside_a_repo", [False, True], ids=["alone", "in-a-repo"])
def test_a_repository_without_a_dot_git_is_never_left_for_host_git(
    way: tuple[str, ...], inside_a_repo: bool, docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = _project(tmp_path, inside_a_repo)
    marker = tmp_path / "pwned"
    script = f"mkdir sub && {_bare('.', marker)} && {_bare('sub', marker)} && echo b > b.txt && echo c > sub/c.txt"
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    mode, *apply = way
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", mode, *apply, "-p", "g", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert ("moved to" if mode == "bind" else "left out") in done.stderr
    if mode == "overlay" and not apply:
        applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
        assert applied.returncode == 0, applied.stderr
    assert (project / "b.txt").read_text() == "b\n" and (project / "sub" / "c.txt").read_text() == "c\n"
    for folder in (project, project / "sub"):
        assert not (folder / "HEAD").exists() and not (folder / "config").exists()
    host_git_status_runs_nothing(project, marker)


def test_what_makes_a_folder_a_repository_is_moved_aside_and_the_rest_stays(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()  # the project's own, there before the goal
    (tmp_path / "config" / "app.ini").write_text("x\n")
    before = bind.snapshot(str(tmp_path))
    (tmp_path / "sub").mkdir()
    for folder in (tmp_path, tmp_path / "sub"):
        (folder / "HEAD").write_text("ref: refs/heads/main\n")
        (folder / "objects").mkdir()
        (folder / "refs").mkdir()
    (tmp_path / "sub" / "config").write_text("[core]\n\tfsmonitor = false\n")
    moved = bind.quarantine(str(tmp_path), bind.planted(str(tmp_path), before), before)
    assert [label.split(" ")[0] for label, _ in moved] == [str(tmp_path / "sub"), str(tmp_path)]
    assert (tmp_path / "config" / "app.ini").read_text() == "x\n" and not (tmp_path / "HEAD").exists()
    assert not (tmp_path / "sub" / "config").exists() and not (tmp_path / "sub" / "objects").exists()
    assert bind.planted(str(tmp_path), before) == []
    for _, target in moved:  # what was moved aside is no repository git would take either
        assert subprocess.run(["git", "rev-parse", "--git-dir"], cwd=target, capture_output=True).returncode != 0


def test_apply_refuses_what_would_make_a_repository_of_the_project_as_it_is_now(tmp_path: Path) -> None:
    """The goal wrote objects/, refs/ and a config into `sub`: no repository, so nothing was left out;
    since then the host gave `sub` a HEAD. Applied now, it would be one: a conflict, nothing applied."""
    project, upper = tmp_path / "p", tmp_path / "upper"
    (project / "sub").mkdir(parents=True)
    for folder in ("objects", "refs/heads"):
        (upper / "sub" / folder).mkdir(parents=True)
    (upper / "sub" / "config").write_text("[core]\n\tfsmonitor = touch pwned\n")
    manifest = Manifest("id", "g", str(project), time.time() - 1)
    Builder(HostUpper(str(upper)), str(project), manifest, tmp_path / "change").build()
    assert withhold.withhold(manifest, tmp_path / "change") == []
    (project / "sub" / "HEAD").write_text("ref: refs/heads/main\n")
    with pytest.raises(ApplyError) as refused:
        apply.apply(manifest, tmp_path / "change")
    assert "sub/config: a file git would read as the repository's own" in refused.value.format_message()
    assert not (project / "sub" / "config").exists() and refused.value.exit_code == 6


@pytest.mark.parametrize("options", [(), ("--apply",)], ids=["apply-last", "-p-apply"])
def test_commits_that_carry_a_repository_are_not_kept(
    options: tuple[str, ...], docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    start = git(project, "rev-parse", "HEAD")
    marker = tmp_path / "pwned"
    script = f"mkdir sub && {_bare('sub', marker)} && echo b > b.txt && git add -A -f && {IDENT} commit -qm plant"
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    overlay = ("--sandbox", "--workspace", "overlay", *options)
    done = nanocode(tmp_path, api, *overlay, "-p", "g", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert "commits are not kept" in done.stderr and "left out" in done.stderr
    if not options:
        applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
        assert applied.returncode == 0, applied.stderr
    assert git(project, "rev-parse", "HEAD") == start and (project / "b.txt").read_text() == "b\n"
    assert not (project / "sub" / "HEAD").exists() and not (project / "sub" / "config").exists()
    host_git_status_runs_nothing(project, marker)
