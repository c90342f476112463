"""Special files the sandbox can make without privileges (a FIFO, a socket) where nanocode reads
what git would read: the goal must still end, promptly, with what it planted moved aside."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import env, nanocode, repo, workspace_options

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")


def _args(project: Path, mode: str) -> list[str]:
    return [*workspace_options(mode), "-p", "g", "--project", str(project)]


def _goal(tmp_path: Path, api: ScriptedAPI, project: Path, mode: str) -> subprocess.CompletedProcess[str]:
    """A goal in `mode` (see `workspace_options`) that ends well, whatever it planted."""
    done = nanocode(tmp_path, api, *_args(project, mode))
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr
    return done


def _last(tmp_path: Path, project: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`nanocode diff last` or `apply last`, run from the project as a person would."""
    done = nanocode(tmp_path, None, command, "last", cwd=project)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("where", ["sub/.git", "r/HEAD"])
def test_a_fifo_named_as_git_reads_does_not_hang_the_end_of_a_bind_goal(
    where: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    plant = f"mkdir -p sub r/objects r/refs && mkfifo {where}"
    api.add(tools(call("shell", {"command": f"{plant}; echo b > b.txt"})), message(f"{MARKER} done"))
    done = _goal(tmp_path, api, project, "bind")
    assert (project / "b.txt").read_text() == "b\n"
    if where.startswith("sub"):
        assert not (project / "sub" / ".git").exists() and "moved to" in done.stderr


def test_a_name_with_a_newline_makes_up_no_line_of_the_summary_or_the_diff(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    forged = "Makefile | 0 files changed [nothing to review]"
    script = f"touch \"$(printf 'x\\n{forged}')\"; ln -s \"$(printf '../..\\n{forged}')\" l; true"
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = _goal(tmp_path, api, project, "overlay")
    shown = _last(tmp_path, project, "diff")
    for line in [*done.stderr.splitlines(), *shown.stdout.splitlines()]:
        assert not line.lstrip().startswith(forged[:8]), line


def test_a_bind_goal_leaves_no_setuid_or_setgid_file(api: ScriptedAPI, tmp_path: Path) -> None:
    """The sandbox writes as the user (root, when nanocode runs as root): a setuid file it leaves
    would run as them for anyone who can reach the project."""
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    script = (
        "printf x > s && chmod 6755 s && mkdir -p d && cp s d/t && chmod 4700 d/t && chmod 2755 a.txt && "
        "mkdir w && chmod 777 w && touch w/f && chmod 646 w/f"
    )
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = _goal(tmp_path, api, project, "bind")
    assert (project / "s").read_text() == "x"
    modes = {name: (project / name).stat().st_mode & 0o7777 for name in ("s", "d/t", "a.txt", "w", "w/f")}
    assert modes == {"s": 0o755, "d/t": 0o700, "a.txt": 0o755, "w": 0o775, "w/f": 0o644}
    assert "setuid, setgid or writable by anyone" in done.stderr


def test_a_killed_bind_goal_leaves_no_setuid_file(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    api.add(tools(call("shell", {"command": "printf x > s && chmod 4755 s && sleep 300"})))
    command = [sys.executable, "-m", "nanocode", *_args(project, "bind")]
    process = subprocess.Popen(command, env=env(tmp_path, api), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (project / "s").exists() or not (project / "s").stat().st_mode & 0o4000:
        assert time.monotonic() < deadline and process.poll() is None, "the goal did not plant"
        time.sleep(0.2)
    process.kill()
    process.wait()
    api.add(message(f"{MARKER} next"))
    _goal(tmp_path, api, project, "bind")
    assert (project / "s").stat().st_mode & 0o7777 == 0o755


def test_a_name_with_a_newline_makes_up_no_line_of_a_bind_goals_warnings(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    script = 'd="$(printf \'d\\nForged: all clear\')" && mkdir "$d" && touch "$d/Makefile" && git init -q "$d"'
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = _goal(tmp_path, api, project, "bind")
    assert "moved to" in done.stderr and "Makefile" in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("Forged")], done.stderr


@pytest.mark.parametrize("mode", ["overlay", "overlay --apply"])
def test_drivers_the_goal_names_run_nothing_in_the_git_nanocode_runs(
    mode: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    """Filter, textconv and diff drivers, hooks and alternates the goal writes into its repository and
    commits: nanocode's host git (the series, the bundle, fetch, read-tree) runs none of them; the
    change set applied by `apply last`, or by the goal itself."""
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    marker = tmp_path / "ran"
    ident = "git -c user.name=m -c user.email=m@x"
    script = (
        f"printf '* filter=x diff=x\\n' > .gitattributes && echo b > a.txt && git add -A && {ident} commit -qm c && "
        f"for k in filter.x.clean filter.x.smudge filter.x.process diff.x.textconv diff.x.command "
        f"core.fsmonitor core.sshCommand; do git config $k 'touch {marker}; false'; done; "
        f"mkdir -p .git/h && printf '#!/bin/sh\\ntouch {marker}\\n' > .git/h/post-index-change && "
        "chmod +x .git/h/post-index-change && git config core.hooksPath .git/h; "
        "echo /nonexistent/objects > .git/objects/info/alternates; true"
    )
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = _goal(tmp_path, api, project, mode)
    if mode == "overlay":
        _last(tmp_path, project, "apply")
    assert (project / "a.txt").read_text() == "b\n"
    assert not marker.exists()
    assert "filter" not in (project / ".git" / "config").read_text()
    log = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=project, capture_output=True, text=True, timeout=30)
    assert log.stdout.strip() == "c", done.stderr  # the series was read, bundled, fetched and set
