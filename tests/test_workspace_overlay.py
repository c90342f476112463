"""Overlay mode against the real engine: the project is untouched until its change set is applied."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, text, tools
from tests.workspace_support import env, git, nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")


def _shell(*commands: str) -> list[Any]:
    return [tools(call("shell", {"command": c})) for c in commands]


def test_overlay_goal_leaves_the_project_untouched_until_apply_last(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n", "b.txt": "bee\n", "gone.txt": "bye\n", "run.sh": "echo\n"})
    before = git(project, "status", "--porcelain")
    api.add(
        *_shell(
            "echo two >> a.txt && rm gone.txt && mkdir -p new/deep && printf 'x\\0y' > new/deep/bin.dat",
            "mv b.txt c.txt && chmod +x run.sh && ln -s a.txt link && : > empty && echo m > Makefile",
        ),
        message(f"{MARKER} done"),
    )
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", "overlay", "-p", "change", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert (project / "a.txt").read_text() == "one\n" and (project / "gone.txt").exists()
    assert not (project / "new").exists() and git(project, "status", "--porcelain") == before
    assert "kept" in done.stderr and "Makefile" in done.stderr and "review" in done.stderr

    listed = nanocode(tmp_path, None, "changes", cwd=project)
    assert listed.returncode == 0 and "change" in listed.stdout and "Makefile" in listed.stdout
    shown = nanocode(tmp_path, None, "diff", "last", cwd=project)
    assert "+two" in shown.stdout and "Binary file new/deep/bin.dat" in shown.stdout
    assert "b.txt" in shown.stdout and "c.txt" in shown.stdout

    applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert (project / "a.txt").read_text() == "one\ntwo\n"
    assert not (project / "gone.txt").exists() and not (project / "b.txt").exists()
    assert (project / "c.txt").read_text() == "bee\n"
    assert (project / "new/deep/bin.dat").read_bytes() == b"x\0y"
    assert os.stat(project / "run.sh").st_mode & stat.S_IXUSR
    assert os.readlink(project / "link") == "a.txt"
    assert (project / "empty").read_bytes() == b""
    assert not [p for p in project.iterdir() if p.name.startswith(".nanocode")]
    again = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert again.returncode != 0 and "applied already" in again.stderr


def test_commits_in_the_goal_become_commits_on_the_host(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n"})
    head = git(project, "rev-parse", "HEAD").strip()
    config = (project / ".git" / "config").read_text()
    ident = "git -c user.name=m -c user.email=m@x"
    api.add(
        *_shell(
            f"echo two >> a.txt && {ident} commit -qam second && echo three > b.txt && git add b.txt"
            f" && {ident} commit -qm third && echo wip >> a.txt",
            "git config core.fsmonitor 'touch /tmp/x' && echo 'echo pwned' > .git/hooks/post-commit",
        ),
        message(f"{MARKER} committed"),
    )
    done = nanocode(
        tmp_path, api, "--sandbox", "--workspace", "overlay", "--apply", "-p", "commit", "--project", str(project)
    )
    assert done.returncode == 0, done.stderr
    assert "2 commits on refs/heads/main" in done.stderr and "applied" in done.stderr
    assert git(project, "log", "--format=%s").split() == ["third", "second", "start"]
    assert git(project, "rev-parse", "HEAD~2").strip() == head
    assert (project / "a.txt").read_text() == "one\ntwo\nwip\n"
    assert git(project, "status", "--porcelain") == " M a.txt\n"
    assert (project / ".git" / "config").read_text() == config
    assert not (project / ".git" / "hooks" / "post-commit").exists()


def test_a_conflict_applies_nothing_and_lists_the_paths(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "a.txt").write_text("one\n")
    (project / "b.txt").write_text("bee\n")
    api.add(*_shell("echo A > a.txt && echo B > b.txt && echo C > c.txt"), message(f"{MARKER} ok"))
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", "overlay", "-p", "x", "--project", str(project))
    assert done.returncode == 0, done.stderr
    (project / "b.txt").write_text("edited by the user\n")
    refused = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert refused.returncode == 6 and "b.txt" in refused.stderr and "a.txt" not in refused.stderr
    assert (project / "a.txt").read_text() == "one\n" and not (project / "c.txt").exists()
    assert len(refused.stderr.strip().splitlines()) == 1


def test_secrets_stay_masked_and_are_never_applied(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text("KEY=secret\n")
    api.add(
        *_shell("cat .env; echo KEY=evil > sub.env; mkdir d && echo KEY=x > d/.env; echo ok > a"),
        message(f"{MARKER} ok"),
    )
    done = nanocode(
        tmp_path, api, "--sandbox", "--workspace", "overlay", "--apply", "-p", "x", "--project", str(project)
    )
    assert done.returncode == 0, done.stderr
    results = [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]
    assert "KEY=secret" not in json.dumps(results)
    assert (project / ".env").read_text() == "KEY=secret\n" and not (project / "d" / ".env").exists()
    assert (project / "a").read_text() == "ok\n"


def test_the_repl_asks_to_apply_discard_or_keep(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    api.add(*_shell("echo 1 > one"), message(f"{MARKER} one"), *_shell("echo 2 > two"), message(f"{MARKER} two"))
    api.add(*_shell("echo 3 > three"), message(f"{MARKER} three"))
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "--sandbox", "--workspace", "overlay", "--project", str(project)],
        input="first\na\nsecond\nd\nthird\n\n",
        env=env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("apply / discard / keep? [a/d/K]") == 3
    assert sorted(p.name for p in project.iterdir()) == ["one"]
    kept = nanocode(tmp_path, None, "changes", cwd=project)
    assert "third" in kept.stdout and "second" not in kept.stdout and "(applied)" in kept.stdout


def test_a_goal_stopped_by_its_budget_keeps_its_change_set_even_with_apply(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    api.add(*_shell("echo partial > half.txt"), *_shell("true"))
    done = nanocode(
        tmp_path,
        api,
        "--sandbox",
        "--workspace",
        "overlay",
        "--apply",
        "--max-steps",
        "1",
        "-p",
        "x",
        "--project",
        str(project),
    )
    assert done.returncode == 5, done.stderr
    assert "kept" in done.stderr and done.stdout == ""
    assert list(project.iterdir()) == []
    assert nanocode(tmp_path, None, "apply", "last", cwd=project).returncode == 0
    assert (project / "half.txt").read_text() == "partial\n"


@pytest.mark.parametrize(("mode", "said"), [("bind", "commits do not"), ("overlay", "use\ngit freely")])
def test_the_system_prompt_tells_what_git_can_do(
    mode: str, said: str, docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    api.add(message(f"{MARKER} ok"))
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", mode, "-p", "x", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert said in text(api.requests[0]["messages"][0])


def test_overlay_needs_the_sandbox_and_apply_needs_overlay(api: ScriptedAPI, tmp_path: Path) -> None:
    overlay = nanocode(tmp_path, api, "--workspace", "overlay", "-p", "x", "--project", str(tmp_path))
    assert overlay.returncode == 3 and "needs --sandbox" in overlay.stderr
    applying = nanocode(tmp_path, api, "--sandbox", "--apply", "-p", "x", "--project", str(tmp_path))
    assert applying.returncode == 3 and "--apply needs --workspace overlay" in applying.stderr


def test_an_interrupted_goal_keeps_its_change_set(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    api.add(*_shell("echo before > made.txt", "sleep 300"))
    command = [sys.executable, "-m", "nanocode", "--sandbox", "--workspace", "overlay", "-p", "x"]
    process = subprocess.Popen(
        [*command, "--project", str(project)], env=env(tmp_path, api), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "kept" in stderr and list(project.iterdir()) == []
    listed = nanocode(tmp_path, None, "changes", cwd=project)
    assert "interrupted" in listed.stdout
    assert nanocode(tmp_path, None, "apply", "last", cwd=project).returncode == 0
    assert (project / "made.txt").read_text() == "before\n"


def test_commits_for_a_branch_the_project_left_apply_nothing(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n"})
    api.add(
        *_shell("echo two >> a.txt && git -c user.name=m -c user.email=m@x commit -qam two"), message(f"{MARKER} ok")
    )
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", "overlay", "-p", "x", "--project", str(project))
    assert done.returncode == 0, done.stderr
    git(project, "checkout", "-q", "-b", "elsewhere")
    refused = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert refused.returncode == 6 and "refs/heads/main" in refused.stderr
    assert git(project, "log", "--format=%s").split() == ["start"]
    assert (project / "a.txt").read_text() == "one\n"


def test_a_failure_after_the_commits_undoes_them_too(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanocode.workspace import apply, store

    project = repo(tmp_path / "p", {"a.txt": "one\n", "b.txt": "bee\n"})
    head = git(project, "rev-parse", "HEAD")
    commit = "echo two >> a.txt && git -c user.name=m -c user.email=m@x commit -qam two && echo B > b.txt"
    api.add(*_shell(commit), message(f"{MARKER} ok"))
    done = nanocode(tmp_path, api, "--sandbox", "--workspace", "overlay", "-p", "x", "--project", str(project))
    assert done.returncode == 0, done.stderr
    manifest, folder = store.load(store.of_project(store.listed(), project)[0].id)
    assert manifest.series
    real = os.replace

    def full(source: str, target: str, **handles: int) -> None:
        if handles:  # the applier's moves in the project; not git's own files
            raise OSError(28, "No space left on device")
        real(source, target)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(apply.ApplyError, match="No space left"):
        apply.apply(manifest, folder)
    monkeypatch.setattr(os, "replace", real)
    assert git(project, "rev-parse", "HEAD") == head
    assert (project / "a.txt").read_text() == "one\n" and (project / "b.txt").read_text() == "bee\n"
    assert git(project, "status", "--porcelain") == ""
