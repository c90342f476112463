"""The goal's commits against the real engine: shown once, applied as the history they are (rewritten
too), and never bringing back what the goal's final tree no longer has."""

import os
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import git, nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")
IDENT = "git -c user.name=m -c user.email=m@x"


def _goal(tmp_path: Path, api: ScriptedAPI, project: Path, script: str, name: str = "g") -> Any:
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", "overlay", "-p", name, "--project", str(project))
    assert done.returncode == 0, done.stderr
    return done


def _apply(tmp_path: Path, project: Path) -> None:
    applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert applied.returncode == 0, applied.stderr


def _unborn(project: Path) -> Path:
    """A repository whose branch has no commit yet, and a file not added."""
    project.mkdir()
    git(project, "init", "-q")
    (project / "a.txt").write_text("one\n")
    return project


def _subjects(project: Path) -> list[str]:
    """The subjects of the branch's commits, newest first."""
    return git(project, "log", "--format=%s").split()


def test_commits_show_once_with_modes_and_bring_back_nothing_the_goal_deleted(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n", "run.sh": "echo\n"})
    script = (
        f"echo two >> a.txt && {IDENT} commit -qam second && echo m > Makefile && git add Makefile"
        f" && {IDENT} commit -qm make && rm Makefile && chmod +x run.sh"
    )
    done = _goal(tmp_path, api, project, script)
    assert "2 commits on refs/heads/main" in done.stderr and "Makefile" not in done.stderr.split("changed,")[0]
    shown = nanocode(tmp_path, None, "diff", "last", cwd=project).stdout
    assert shown.count("+two") == 1, shown
    assert "old mode 100644\nnew mode 100755" in shown and "run.sh" in shown
    assert "second" in shown and "make" in shown  # the commits, listed after the changes
    _apply(tmp_path, project)
    assert _subjects(project) == ["make", "second", "start"]
    assert not (project / "Makefile").exists()
    assert (project / "a.txt").read_text() == "one\ntwo\n"
    assert sorted(git(project, "status", "--porcelain").splitlines()) == [" D Makefile", " M run.sh"]


def test_an_amended_commit_is_said_and_applied_as_it_is(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n"})
    start = git(project, "rev-parse", "HEAD").strip()
    done = _goal(tmp_path, api, project, f"{IDENT} commit -q --amend -m reworded")
    said = [line for line in done.stderr.splitlines() if "rewrote the history of refs/heads/main" in line]
    assert len(said) == 1, done.stderr
    _apply(tmp_path, project)
    assert _subjects(project) == ["reworded"]
    assert start in git(project, "reflog", "--format=%H", "main")
    assert git(project, "status", "--porcelain") == ""


def test_a_reset_is_said_and_applied_as_it_is(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n"})
    first = git(project, "rev-parse", "HEAD").strip()
    (project / "b.txt").write_text("b\n")
    git(project, "add", "b.txt")
    git(project, "commit", "-qm", "second")
    done = _goal(tmp_path, api, project, "git reset -q --hard HEAD~1")
    assert "1 commit(s) of it replaced by 0" in done.stderr
    _apply(tmp_path, project)
    assert git(project, "rev-parse", "HEAD").strip() == first
    assert not (project / "b.txt").exists() and git(project, "status", "--porcelain") == ""


def _id(tmp_path: Path, project: Path, goal: str) -> str:
    """The id of the kept change set of the goal named `goal`."""
    listed = nanocode(tmp_path, None, "changes", cwd=project).stdout.splitlines()[1:]
    return next(line.split()[0] for line in listed if line.split()[-1] == goal)


@pytest.mark.parametrize("same_file", [False, True], ids=["apart", "same-file"])
def test_two_goals_commits_apply_one_after_the_other(same_file: bool, api: ScriptedAPI, tmp_path: Path) -> None:
    """As `batch apply` does: the second goal's commits go on top of the first's, made again there."""
    project = repo(tmp_path / "p", {"a.txt": "one\n", "b.txt": "bee\n"})
    second = "a.txt" if same_file else "b.txt"
    _goal(tmp_path, api, project, f"echo A >> a.txt && {IDENT} commit -qam first", "one")
    _goal(tmp_path, api, project, f"echo B >> {second} && {IDENT} commit -qam second && echo wip > c.txt", "two")
    first_id, second_id = _id(tmp_path, project, "one"), _id(tmp_path, project, "two")
    assert nanocode(tmp_path, None, "apply", first_id, cwd=project).returncode == 0
    head = git(project, "rev-parse", "HEAD")
    done = nanocode(tmp_path, None, "apply", second_id, cwd=project)
    if same_file:
        assert done.returncode == 6 and "a.txt" in done.stderr, done.stderr
        assert git(project, "rev-parse", "HEAD") == head and not (project / "c.txt").exists()
        return
    assert done.returncode == 0, done.stderr
    assert _subjects(project) == ["second", "first", "start"]
    assert (project / "b.txt").read_text() == "bee\nB\n" and (project / "c.txt").read_text() == "wip\n"
    assert git(project, "status", "--porcelain") == "?? c.txt\n"


def test_commits_on_a_branch_with_no_commit_yet_are_kept_and_applied(api: ScriptedAPI, tmp_path: Path) -> None:
    project = _unborn(tmp_path / "p")
    done = _goal(tmp_path, api, project, f"git add a.txt && {IDENT} commit -qm first && echo wip >> a.txt")
    assert "1 commit on refs/heads/main" in done.stderr
    _apply(tmp_path, project)
    assert _subjects(project) == ["first"]
    assert (project / "a.txt").read_text() == "one\nwip\n" and git(project, "status", "--porcelain") == " M a.txt\n"


def test_a_failure_after_the_first_commit_of_a_branch_leaves_no_branch(
    api: ScriptedAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanocode.workspace import apply, store

    project = _unborn(tmp_path / "p")
    _goal(tmp_path, api, project, f"git add a.txt && {IDENT} commit -qm first && echo wip >> a.txt")
    manifest, folder = store.load(store.of_project(store.listed(), project)[0].id)
    real = os.replace

    def full(source: str, target: str, **handles: int) -> None:
        if handles:  # the applier's moves in the project
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(apply.ApplyError, match="No space left"):
        apply.apply(manifest, folder)
    monkeypatch.setattr(os, "replace", real)
    assert git(project, "branch", "--list") == "" and not (project / ".git" / "index").exists()
    assert (project / "a.txt").read_text() == "one\n"


def test_commits_apply_to_a_project_whose_files_were_copied_or_chowned_since_its_index_was_written(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    """git's index keeps each file's inode and owner: a project moved, restored or chowned has an index
    git calls stale (read-tree -m refuses "not uptodate") though no file changed; apply refreshes it."""
    project = repo(tmp_path / "p", {"a.txt": "one\n", "b.txt": "b\n"})
    _goal(tmp_path, api, project, f"echo two >> a.txt && {IDENT} commit -qam second")
    for name in ("a.txt", "b.txt"):
        os.chown(project / name, 1000, 1000)
    _apply(tmp_path, project)
    assert _subjects(project) == ["second", "start"]
    assert (project / "a.txt").read_text() == "one\ntwo\n" and git(project, "status", "--porcelain") == ""
