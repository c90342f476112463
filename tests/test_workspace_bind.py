"""Bind mode: its git folders (what is found, protected and moved aside), then a sandbox on its mounts,
as a goal's container gets them: git's files and the project's secrets out of the sandbox's reach."""

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanocode.errors import FileOpError
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
from nanocode.workspace import bind, workspace
from nanocode.workspace.bind import QuarantineFailed


def test_every_git_is_found_and_mounted_read_only(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    (tmp_path / "deep" / "er" / ".git").mkdir(parents=True)
    (tmp_path / ".realgit").mkdir()
    (tmp_path / "linked").mkdir()
    os.symlink("../.realgit", tmp_path / "linked" / ".git")
    gits = bind.find_gits(str(tmp_path))
    assert set(gits) == {".git", "sub/.git", "deep/er/.git", "linked/.git"}
    mounts = {m["Target"]: m["ReadOnly"] for m in bind.read_only_mounts(str(tmp_path), gits)}
    expected = [".git", "sub/.git", "deep/er/.git", ".realgit"]
    assert mounts == {str(tmp_path / name): True for name in expected}


def test_what_appeared_or_changed_is_moved_aside_to_a_fresh_name(tmp_path: Path) -> None:
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text("gitdir: /somewhere\n")
    before = bind.snapshot(str(tmp_path))
    (tmp_path / "wt" / ".git").write_text("gitdir: /elsewhere\n")
    (tmp_path / "new" / ".git").mkdir(parents=True)
    (tmp_path / "new" / ".git.nanocode-quarantine-0000000000000000").mkdir()  # a name it cannot guess
    moved = bind.quarantine(str(tmp_path), bind.planted(str(tmp_path), before), before)
    assert [os.path.relpath(path, tmp_path) for path, _ in moved] == ["new/.git", "wt/.git"]
    assert all(Path(target).exists() and ".nanocode-quarantine-" in target for _, target in moved)
    assert not (tmp_path / "new" / ".git").exists() and not (tmp_path / "wt" / ".git").exists()
    assert bind.planted(str(tmp_path), before) == []


def test_a_move_that_fails_is_one_line_and_its_own_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()

    def refused(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(QuarantineFailed) as caught:
        bind.quarantine(str(tmp_path), [".git"], bind.Snapshot())
    assert caught.value.exit_code == 6
    assert "could not be moved aside (Permission denied)" in caught.value.format_message()
    assert "\n" not in caught.value.format_message()


@contextlib.contextmanager
def _bound(docker_engine: Any, image: str, project: Path, notes: list[str]) -> Iterator[SandboxExecutor]:
    """A sandbox sharing the project through a bind workspace, opened and finished as a goal does."""
    ws = workspace.open_workspace(docker_engine, str(project), "bind", uuid.uuid4().hex[:12], notes.append, image)
    config = SandboxConfig(project=str(project), image=image, mounts=ws.mounts)
    executor = SandboxExecutor(docker_engine, config, 20000, notes.append)
    try:
        yield executor
    finally:
        executor.close()
        ws.finish("test", "done")
        ws.close()


@pytest.mark.usefixtures("no_leftovers")
def test_git_hooks_and_config_cannot_be_planted(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    config_before = (project / ".git" / "config").read_text()
    hooks_before = sorted(p.name for p in (project / ".git" / "hooks").iterdir())
    with _bound(docker_engine, sandbox_image, project, []) as executor:
        planted = executor.run("echo 'touch /tmp/pwned' > .git/hooks/post-checkout", 10)
        assert planted.exit_code != 0 and "Read-only" in planted.stderr
        assert executor.run("git config core.fsmonitor 'touch /tmp/pwned'", 10).exit_code != 0
        with pytest.raises(FileOpError):
            executor.write_file(".git/hooks/pre-commit", "#!/bin/sh\ntouch /tmp/pwned\n")
        assert executor.run("echo hi > a.txt && git add a.txt", 20).exit_code != 0  # the index is git's too
        assert executor.run("git status --short", 20).stdout == "?? a.txt\n"
    assert (project / "a.txt").read_text() == "hi\n"
    assert sorted(p.name for p in (project / ".git" / "hooks").iterdir()) == hooks_before
    assert (project / ".git" / "config").read_text() == config_before


@pytest.mark.usefixtures("no_leftovers")
def test_git_folder_cannot_be_swapped_or_redirected(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    notes: list[str] = []
    with _bound(docker_engine, sandbox_image, project, notes) as executor:
        swapped = executor.run("mv .git .git_old", 10)
        assert swapped.exit_code != 0, swapped.stdout
        assert executor.run("git init -q evil", 10).exit_code == 0
        assert executor.run("echo $PWD/evil/.git > .git/commondir", 10).exit_code != 0
        assert executor.run("echo '[core]' > .git/config.worktree", 10).exit_code != 0
    assert sorted(p.name for p in project.iterdir()) == [".git", "evil"]
    assert not (project / ".git" / "commondir").exists() and not (project / ".git" / "config.worktree").exists()
    # The repo it made is moved aside, under a name the sandbox could not know.
    assert not (project / "evil" / ".git").exists()
    aside = [p.name for p in (project / "evil").iterdir()]
    assert len(aside) == 1 and re.fullmatch(r"\.git\.nanocode-quarantine-[0-9a-f]{16}", aside[0]), aside
    assert any("warning" in note and str(project / "evil" / ".git") in note for note in notes)
    done = subprocess.run(["git", "status", "--short"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("no_leftovers")
def test_dotenv_is_masked_inside(sandbox_image: str, docker_engine: Any, project: Path) -> None:
    (project / ".env").write_text("OPENROUTER_API_KEY=sk-very-secret\n")
    with _bound(docker_engine, sandbox_image, project, []) as executor:
        assert executor.run("cat .env; wc -c < .env", 10).stdout == "0\n"
        assert executor.read_file(".env") == ""
        with pytest.raises(FileOpError):
            executor.write_file(".env", "OPENROUTER_API_KEY=replaced")
        assert executor.run("echo OPENROUTER_API_KEY=replaced > .env", 10).exit_code != 0
        assert executor.run("cat .env", 10).stdout == ""
    assert (project / ".env").read_text() == "OPENROUTER_API_KEY=sk-very-secret\n"


@pytest.mark.usefixtures("no_leftovers")
def test_every_dotenv_up_to_the_project_reads_empty(
    docker_engine: Any, sandbox_image: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = project / "app"
    app.mkdir()
    for path in (project / ".env.production", app / ".env", project / ".env.example"):
        path.write_text(f"SECRET={path.name}\n")
    monkeypatch.chdir(app)
    with _bound(docker_engine, sandbox_image, project, []) as executor:
        shown = executor.run("cat .env.production app/.env .env.example", 10).stdout
    assert shown == "SECRET=.env.example\n"


@pytest.mark.parametrize(
    ("before", "now", "same"),
    [
        ("dir@64769:12", "dir@64769:12", True),
        ("dir@64769:12", "dir@64769:13", False),  # another folder at the path
        ("dir", "dir@64769:12", True),  # a journal from before identities: compared without it
        ("repo:ab", "repo:ab@1:2", True),
        ("repo:ab", "repo:cd@1:2", False),
        ("file:gitdir: x@y", "file:gitdir: x@y", True),
        ("file:gitdir: x", "file:gitdir: x@y", False),  # a gitfile's text is never cut
        ("dir", "link:elsewhere", False),
    ],
)
def test_a_repository_is_what_it_was_only_as_the_same_folder(before: str, now: str, same: bool) -> None:
    assert bind._same(before, now) is same
