"""`git commit` in the sandbox commits as the user: their name and email from the host's git config,
and nothing else of the host's config or environment."""

import base64
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.prompts import MARKER
from nanocode.sandbox.container import ENVIRONMENT
from nanocode.sandbox.identity import FALLBACK, git_environment
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import git, home, nanocode, repo

IDENTITY = {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"}
# What a shell sets by itself, and what the runtime adds for the command it runs.
SHELL = {"PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME"}
# Other settings a user's config holds: none of them may matter.
KEYS = [
    "core.editor",
    "alias.x",
    "credential.helper",
    "url.https://a.example/.insteadOf",
    "author.name",
    "safe.directory",
]


@pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
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


NAMES = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.none() | NAMES, email=st.none() | NAMES, other=st.dictionaries(st.sampled_from(KEYS), NAMES))
def test_only_the_name_and_the_email_cross_whatever_the_config_holds(
    monkeypatch: pytest.MonkeyPatch, name: str | None, email: str | None, other: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "gitconfig"
        config.touch()
        for key, value in {**other, "user.name": name, "user.email": email}.items():
            if value is not None:
                subprocess.run(["git", "config", "--file", str(config), key, value], check=True, capture_output=True)
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        found = git_environment(folder)

    def expected(value: str | None, key: str) -> str:
        value = (value or "").strip()
        return value if value and value.isprintable() else FALLBACK[key]

    assert found == {
        "GIT_AUTHOR_NAME": expected(name, "user.name"),
        "GIT_AUTHOR_EMAIL": expected(email, "user.email"),
        "GIT_COMMITTER_NAME": expected(name, "user.name"),
        "GIT_COMMITTER_EMAIL": expected(email, "user.email"),
    }
