"""Ownership by lease, on one engine shared by nanocodes that cannot see each other's processes.

A sandbox lives as long as its owner's connection (the runtime's stdin): a start and `sandbox prune`
remove only what is stopped, never a running sandbox for a pid that looks gone from where they stand.
"""

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import DockerException

from nanocode.prompts import MARKER
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
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


# A short lease, so that these tests wait little; the default is channel.LEASE.
LEASE = 3.0
# What a busy machine may add to the lease before the engine has seen the runtime end.
SLACK = 15.0


def _state(client: Any, container: str) -> str:
    return str(client.api.inspect_container(container)["State"]["Status"])


def test_an_owner_killed_with_kill_9_leaves_a_sandbox_that_ends_by_itself_and_the_next_prune_removes(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add_goal("killed", tools(call("shell", {"command": "sleep 120"})), message(f"{MARKER} never"))
    (tmp_path / "runtime").mkdir()
    env = _env(tmp_path, api, NANOCODE_LEASE=f"{LEASE:g}", XDG_RUNTIME_DIR=str(tmp_path / "runtime"))
    container = None
    owner = subprocess.Popen(
        _nanocode("-p", "killed", "--project", str(project)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: bool(_running(docker_engine, project)) and len(api.times) >= 1, 60)
        time.sleep(1)  # the command runs
        (container,) = _running(docker_engine, project)
        owner.kill()  # SIGKILL: nothing of nanocode runs after it
        owner.wait()
        _wait_for(lambda: _state(docker_engine, container.id) != "running", LEASE + SLACK)
        (folder,) = (tmp_path / "runtime").iterdir()
        assert folder.name.startswith(f"nanocode-{container.labels['nanocode.goal']}-")
        pruned = subprocess.run(
            [sys.executable, "-m", "nanocode", "sandbox", "prune"], env=env, capture_output=True, text=True, timeout=120
        )
        assert pruned.returncode == 0 and container.name in pruned.stdout, pruned.stderr
        assert container.id not in [c.id for c in lifecycle.ours(docker_engine)]
        assert list((tmp_path / "runtime").iterdir()) == []  # its socket folder went with it
    finally:
        owner.kill()
        if container is not None:
            with contextlib.suppress(DockerException):
                lifecycle.remove(docker_engine, container.id)


@pytest.mark.parametrize("cut", ["closed", "frozen"])
def test_a_sandbox_whose_engine_connection_is_cut_ends_within_the_lease(
    docker_engine: Any, sandbox_image: str, project: Path, cut: str
) -> None:
    """Closed: the engine sees the stream end. Frozen: it sees nothing more and nothing end (the owner's
    machine gone, a network cut), and only the runtime's lease can tell."""
    from nanocode.sandbox.protect import project_mounts
    from tests.second_engine import Relay

    relay = Relay("/var/run/docker.sock")  # an engine reached over TCP, as a remote one is
    client = docker.DockerClient(base_url=relay.url)
    config = SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project)), lease=LEASE)
    executor = SandboxExecutor(client, config, 20000)
    container = executor.container_id
    assert container is not None
    try:
        assert executor.run("echo alive", 30).stdout == "alive\n"
        time.sleep(LEASE + 1)  # the heartbeat holds the lease while the connection lasts
        assert _state(docker_engine, container) == "running"
        relay.close() if cut == "closed" else relay.freeze()
        _wait_for(lambda: _state(docker_engine, container) != "running", LEASE + SLACK)
    finally:
        relay.close()
        executor.close()
        lifecycle.remove(docker_engine, container)
