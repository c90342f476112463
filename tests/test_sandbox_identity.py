"""`git commit` in the sandbox commits as the user: their name and email from the host's git config,
and nothing else of the host's config or environment."""

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from nanocode.sandbox.container import ENVIRONMENT
from nanocode.sandbox.identity import FALLBACK
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import git, home, nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
IDENTITY = {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"}
# What a shell sets by itself, and what the runtime adds for the command it runs.
SHELL = {"PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME"}


@pytest.mark.parametrize("configured", [True, False], ids=["host-identity", "none"])
def test_a_commit_in_the_sandbox_is_the_users_and_nothing_else_crosses(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path, configured: bool
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n"})
    name, email = ("Ada Host", "ada@example.com") if configured else (FALLBACK["user.name"], FALLBACK["user.email"])
    if configured:
        settings = "[user]\n\tname = Ada Host\n\temail = ada@example.com\n[alias]\n\tsecret = !echo host-only\n"
        (home(tmp_path) / ".gitconfig").write_text(settings)
    api.add(
        tools(call("shell", {"command": "echo two >> a.txt && git commit -qam second && env -0 | base64 -w0"})),
        tools(call("shell", {"command": "git config --list --show-origin; git secret; ls -A ~"})),
        message(f"{MARKER} committed"),
    )
    done = nanocode(
        tmp_path,
        api,
        *("--sandbox", "--workspace", "overlay", "--apply", "-p", "commit", "--project", str(project)),
        HOST_ONLY="leak-me",
    )
    assert done.returncode == 0, done.stderr
    assert git(project, "log", "-1", "--format=%s|%an|%ae|%cn|%ce").strip() == f"second|{name}|{email}|{name}|{email}"

    results = [m["content"] for m in api.requests[-1]["messages"] if m["role"] == "tool"]
    inside = dict(entry.split("=", 1) for entry in base64.b64decode(results[0]).decode().split("\0") if "=" in entry)
    assert {k: inside[k] for k in IDENTITY} == {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    image = {entry.split("=", 1)[0] for entry in docker_engine.images.get(sandbox_image).attrs["Config"]["Env"]}
    allowed = set(ENVIRONMENT) | IDENTITY | SHELL | image
    assert set(inside) <= allowed, set(inside) - allowed
    assert str(home(tmp_path)) not in json.dumps(inside) and "leak-me" not in json.dumps(inside)
    assert "host-only" not in results[1] and ".gitconfig" not in results[1] and "Ada" not in results[1]
