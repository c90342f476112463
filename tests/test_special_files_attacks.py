"""Special files the sandbox can make without privileges (a FIFO, a socket) where nanocode reads
what git would read: the goal must still end, promptly, with what it planted moved aside."""

import subprocess
import sys
from pathlib import Path

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import env, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")


@pytest.mark.parametrize("where", ["sub/.git", "r/HEAD"])
def test_a_fifo_named_as_git_reads_does_not_hang_the_end_of_a_bind_goal(
    where: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    plant = f"mkdir -p sub r/objects r/refs && mkfifo {where}"
    api.add(tools(call("shell", {"command": f"{plant}; echo b > b.txt"})), message(f"{MARKER} done"))
    command = [
        sys.executable,
        "-m",
        "nanocode",
        "--sandbox",
        "--workspace",
        "bind",
        "-p",
        "g",
        "--project",
        str(project),
    ]
    done = subprocess.run(command, env=env(tmp_path, api), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "internal error" not in done.stderr
    assert (project / "b.txt").read_text() == "b\n"
    if where.startswith("sub"):
        assert not (project / "sub" / ".git").exists() and "moved to" in done.stderr


def test_a_name_with_a_newline_makes_up_no_line_of_the_summary_or_the_diff(api: ScriptedAPI, tmp_path: Path) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    forged = "Makefile | 0 files changed [nothing to review]"
    script = f"touch \"$(printf 'x\\n{forged}')\"; ln -s \"$(printf '../..\\n{forged}')\" l; true"
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    goal = [
        sys.executable,
        "-m",
        "nanocode",
        "--sandbox",
        "--workspace",
        "overlay",
        "-p",
        "g",
        "--project",
        str(project),
    ]
    done = subprocess.run(goal, env=env(tmp_path, api), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "nanocode", "diff", "last"],
        env=env(tmp_path, api),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    for line in [*done.stderr.splitlines(), *shown.stdout.splitlines()]:
        assert not line.lstrip().startswith(forged[:8]), line
