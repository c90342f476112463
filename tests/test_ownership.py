"""Ownership by lease, on one engine shared by nanocodes that cannot see each other's processes.

A sandbox lives as long as its owner's connection (the runtime's stdin): a start and `sandbox prune`
remove only what is stopped, never a running sandbox for a pid that looks gone from where they stand.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from nanocode.sandbox import container as lifecycle
from tests.scripted_api import ScriptedAPI, call, message, text, tools
from tests.test_sandbox import _env, _nanocode, _wait_for

pytestmark = pytest.mark.docker
NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _goal(api: ScriptedAPI, tmp_path: Path, project: Path, text: str, *wrap: str) -> subprocess.Popen[str]:
    """A goal whose one command sleeps a few seconds, in a nanocode of its own (in a pid namespace of its
    own where `wrap` says so)."""
    api.add_goal(text, tools(call("shell", {"command": "sleep 8; echo slept"})), message(f"{MARKER} {text} done"))
    return subprocess.Popen(
        [*wrap, *_nanocode("-p", text, "--project", str(project))],
        env=_env(tmp_path, api),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _running(docker_engine: Any, project: Path) -> list[Any]:
    return [
        c
        for c in lifecycle.ours(docker_engine)
        if c.labels.get("nanocode.project") == str(project) and c.status == "running"
    ]


def _nanocode_run(tmp_path: Path, api: ScriptedAPI, *args: str, wrap: tuple[str, ...] = ()) -> Any:
    command = [*wrap, sys.executable, "-m", "nanocode", *args]
    return subprocess.run(command, env=_env(tmp_path, api), capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare is not installed")
def test_nanocodes_in_two_pid_namespaces_never_remove_each_others_live_sandboxes(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    inside = _goal(api, tmp_path / "a", project, "goal inside", *NAMESPACE)
    outside = _goal(api, tmp_path / "b", project, "goal outside")
    try:
        _wait_for(lambda: len(_running(docker_engine, project)) == 2 and len(api.times) >= 2, 60)
        owners = {c.labels["nanocode.owner.run"] for c in _running(docker_engine, project)}
        assert len(owners) == 2
        # Each side starts a goal of its own and prunes while the other's command runs.
        api.add_goal("quick inside", message(f"{MARKER} quick"))
        api.add_goal("quick outside", message(f"{MARKER} quick"))
        for wrap, goal in ((tuple(NAMESPACE), "quick inside"), ((), "quick outside")):
            done = _nanocode_run(tmp_path, api, "--sandbox", "-p", goal, "--project", str(project), wrap=wrap)
            assert done.returncode == 0, done.stderr
            pruned = _nanocode_run(tmp_path, api, "sandbox", "prune", wrap=wrap)
            assert pruned.returncode == 0, pruned.stderr
        assert len(_running(docker_engine, project)) == 2  # neither live sandbox was touched
        for process, goal in ((inside, "goal inside"), (outside, "goal outside")):
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert out == f"{goal} done\n"
        results = [text(m) for r in api.requests for m in r["messages"] if m["role"] == "tool"]
        assert results.count("slept\n") >= 2  # both commands ran to their end
    finally:
        for process in (inside, outside):
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_a_running_sandbox_no_owner_ended_goes_only_with_stale_and_others_only_with_all_users(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    name = f"nanocode-lease-{time.monotonic_ns()}"
    labels = lifecycle.owner_labels("lease", str(tmp_path)) | {
        "nanocode.owner.run": "an-old-run",
        "nanocode.owner.user": "someone-else",
    }
    item = docker_engine.containers.run(sandbox_image, ["sleep", "300"], labels=labels, name=name, detach=True)
    try:
        mine = _nanocode_run(tmp_path, api, "sandbox", "ls")
        assert name not in mine.stdout  # another user's: not listed by default
        every = _nanocode_run(tmp_path, api, "sandbox", "ls", "--all-users")
        assert [line for line in every.stdout.splitlines() if name in line and "running" in line]
        for args in (["prune"], ["prune", "--all-users"], ["prune", "--stale", "1h", "--all-users"]):
            kept = _nanocode_run(tmp_path, api, "sandbox", *args)
            assert kept.returncode == 0 and name not in kept.stdout, args
            assert docker_engine.containers.get(item.id).status == "running"
        bad = _nanocode_run(tmp_path, api, "sandbox", "prune", "--stale", "soon")
        assert bad.returncode == 2 and "not an age" in bad.stderr
        gone = _nanocode_run(tmp_path, api, "sandbox", "prune", "--stale", "0s", "--all-users")
        assert gone.returncode == 0 and name in gone.stdout, gone.stderr
        assert item.id not in [c.id for c in lifecycle.ours(docker_engine)]
    finally:
        lifecycle.remove(docker_engine, item.id)
