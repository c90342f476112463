"""A running command's output, shown as it comes to a person at a terminal, and nowhere else."""

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools

SLOW = "for i in 1 2 3 4; do echo step $i; sleep 0.5; done; printf 'evil \\033[31m\\n'; sleep 0.5"


def _env(tmp_path: Path, api: ScriptedAPI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE", "MODEL"))}
    env.pop("NO_COLOR", None)
    return env | {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "OPENROUTER_API_KEY": "sk-t",
        "INFERENCE_BASE_URL": api.url,
    }


def _script(api: ScriptedAPI) -> None:
    api.add_goal("slow", tools(call("shell", {"command": SLOW})))
    api.add_goal("slow", message(f"{MARKER} done"))


def _on_a_terminal(tmp_path: Path, api: ScriptedAPI, project: Path) -> bytes:
    """What nanocode -p writes to a terminal (its stderr a pseudo-terminal), read as it comes."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "nanocode", "-p", "slow", "--project", str(project)]
    process = subprocess.Popen(
        command, env=_env(tmp_path, api), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal's other end closed: nanocode exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.wait(timeout=10) == 0, seen.decode(errors="replace")
    return seen


def test_a_running_commands_latest_line_is_shown_dim_and_cleared(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    _script(api)
    seen = _on_a_terminal(tmp_path, api, project)
    live = seen.split(b"\x1b[2m  step ")
    assert len(live) >= 3, seen  # steps shown while the command ran, each over the last
    assert b"\x1b[31m" not in seen  # the command's own control sequences reach the terminal escaped
    tool_line = seen.index("→ shell".encode())
    assert seen.index(b"\x1b[2m  step 1") < tool_line  # before the command's end was known


def test_without_a_terminal_no_partial_output_is_written(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    _script(api)
    command = [sys.executable, "-m", "nanocode", "-p", "slow", "--project", str(project)]
    done = subprocess.run(command, env=_env(tmp_path, api), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "step 2" not in done.stderr
