"""What the workspace tests share: running nanocode as a user would, and host git with a tripwire."""

import os
import subprocess
import sys
from pathlib import Path

from tests.scripted_api import ScriptedAPI


def env(tmp_path: Path, api: ScriptedAPI | None, **extra: str) -> dict[str, str]:
    """The environment of every nanocode a test runs: none of the host's NANOCODE_* or endpoint
    settings, a fresh home; the scripted endpoint when there is one (`diff last` needs none)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    endpoint = {"OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url} if api else {}
    return clean | {
        "HOME": str(home(tmp_path)),  # as on a fresh machine: no git identity, no settings
        "XDG_STATE_HOME": str(tmp_path / "state"),
        **endpoint,
        **extra,
    }


def nanocode(
    tmp_path: Path, api: ScriptedAPI | None, *args: str, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    # `cwd`: the project, as a person runs `diff last` or `apply last` from it.
    return subprocess.run(
        [sys.executable, "-m", "nanocode", *args],
        env=env(tmp_path, api, **extra),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def workspace_options(mode: str) -> list[str]:
    """A sandboxed goal's options for `mode`: a workspace, then `--apply` when the goal applies its
    change set itself ("overlay --apply")."""
    workspace, *applying = mode.split()
    return ["--sandbox", "--workspace", workspace, *applying]


def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir(exist_ok=True)
    return folder


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


def host_git_status_runs_nothing(project: Path, marker: Path) -> None:
    """Host `git status`, as the user would run it there, must not run what the sandbox planted."""
    subprocess.run(["git", "status"], cwd=project, capture_output=True, timeout=60)
    subprocess.run(["git", "status"], cwd=project.parent, capture_output=True, timeout=60)
    for folder in project.rglob("*"):
        if folder.is_dir() and ".git" not in folder.parts:
            subprocess.run(["git", "status"], cwd=folder, capture_output=True, timeout=60)
    assert not marker.exists(), "host git ran a command the sandbox planted"
