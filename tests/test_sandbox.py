"""The Docker sandbox against the real engine: lifecycle, limits, isolation, cleanup."""

import contextlib
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from stat import S_IMODE
from typing import Any

import pytest
from docker.errors import NotFound

from nanocode.errors import FileOpError
from nanocode.prompts import MARKER
from nanocode.sandbox import channel
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.channel import DirectTransport, SocketTransport
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
from nanocode.sandbox.protect import project_mounts
from nanocode.tools import format_command
from tests.scripted_api import ScriptedAPI, call, message, text, tools

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def sandbox(docker_engine: Any, sandbox_image: str, project: Path) -> Iterator[SandboxExecutor]:
    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project))),
        20000,
    )
    yield executor
    executor.close()


def _env(tmp_path: Path, api: ScriptedAPI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    return (
        env
        | {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url}
        | extra
    )


def _nanocode(*args: str) -> list[str]:
    return [sys.executable, "-m", "nanocode", "--sandbox", *args]


def _tool_results(api: ScriptedAPI) -> list[str]:
    return [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]


def _owned_by(docker_engine: Any, pid: int) -> list[Any]:
    return [c for c in lifecycle.ours(docker_engine) if c.labels.get("nanocode.owner.pid") == str(pid)]


def test_hardened_labelled_container_exists_for_the_goal_only(
    docker_engine: Any, sandbox: SandboxExecutor, project: Path
) -> None:
    assert sandbox.container_id is not None
    info = docker_engine.api.inspect_container(sandbox.container_id)
    host = info["HostConfig"]
    # Podman lists each dropped capability where Docker says ALL: what counts is what the process has.
    status = sandbox.run("grep -E '^(CapPrm|CapEff|CapBnd|NoNewPrivs):' /proc/self/status", 10).stdout.split()
    assert status == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16, "CapBnd:", "0" * 16, "NoNewPrivs:", "1"]
    assert host["ReadonlyRootfs"] is True
    assert {"no-new-privileges=true", "no-new-privileges"} & set(host["SecurityOpt"])  # Docker's, Podman's
    assert (host["Memory"], host["MemorySwap"]) == (2 * 1024**3, 2 * 1024**3)
    assert host["NanoCpus"] == 2 * 10**9
    assert host["PidsLimit"] == 512
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert host["Privileged"] is False
    # Docker and Podman name these modes differently ("" / "private" / "shareable"): what counts is
    # that none of the container's namespaces is the host's.
    inside = sandbox.run("readlink /proc/self/ns/pid /proc/self/ns/ipc /proc/self/ns/uts", 10).stdout.split()
    outside = [os.readlink(f"/proc/self/ns/{name}") for name in ("pid", "ipc", "uts")]
    assert len(inside) == 3 and not set(inside) & set(outside)
    podman_extras = {"/run", "/var/tmp"}  # Podman's own tmpfs for a read-only root (read_only_tmpfs)
    assert set(host["Tmpfs"]) - podman_extras == {"/tmp", "/home/sandbox"}
    assert sorted((m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]) == sorted(
        [
            (str(project), str(project), True),
            (sandbox.folder, "/run/nanocode", False),  # for the runtime's socket
        ]
    )  # the engine lists them in no set order
    labels = info["Config"]["Labels"]
    assert labels["nanocode"] == "1"
    assert labels["nanocode.owner.pid"] == str(os.getpid())
    assert labels["nanocode.owner.host"] and labels["nanocode.goal"] and labels["nanocode.started"]
    assert sandbox.run("grep CapEff /proc/self/status", 10).stdout.split()[1] == "0000000000000000"
    assert sandbox.run("touch /usr/x", 10).exit_code != 0
    assert sandbox.run("test -e /var/run/docker.sock", 10).exit_code != 0
    container_id = sandbox.container_id
    sandbox.close()
    assert container_id not in [c.id for c in lifecycle.ours(docker_engine)]


def test_environment_holds_no_host_variables(sandbox: SandboxExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(line.split("=", 1) for line in sandbox.run("env", 10).stdout.splitlines() if "=" in line)
    assert env["HOME"] == "/home/sandbox"
    assert env["PAGER"] == "cat"
    assert not set(env) & {"OPENROUTER_API_KEY", "USER", "SSH_AUTH_SOCK", "XDG_STATE_HOME", "PYTEST_CURRENT_TEST"}
    assert sandbox.run("touch ~/works && echo ok", 10).stdout == "ok\n"


def test_network_none(sandbox: SandboxExecutor) -> None:
    assert sandbox.run("ls /sys/class/net", 10).stdout.split() == ["lo"]
    probe = "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), 3)\""
    assert sandbox.run(probe, 10).exit_code != 0


def test_out_of_memory_is_reported(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    config = SandboxConfig(
        project=str(project), image=sandbox_image, memory="128m", mounts=project_mounts(str(project))
    )
    executor = SandboxExecutor(docker_engine, config, 20000)
    try:
        hog = "python3 -c \"a = []\nwhile True: a.append(b'x' * 10**7)\""
        result = executor.run(hog, 60)
        assert result.exit_code != 0
        assert format_command(result, 60).startswith("ERROR: killed: out of memory (limit 128m)")
        assert executor.run("echo still-here", 10).stdout == "still-here\n"
    finally:
        executor.close()


def test_fork_bomb_is_stopped_by_the_pids_limit(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    config = SandboxConfig(project=str(project), image=sandbox_image, pids=64, mounts=project_mounts(str(project)))
    executor = SandboxExecutor(docker_engine, config, 20000)
    try:
        started = time.monotonic()
        result = executor.run("echo $BASHPID; bomb() { bomb | bomb & }; bomb; sleep 5", 3)
        assert time.monotonic() - started < 15
        assert result.timed_out or result.exit_code != 0
        assert executor.run("echo alive", 10).stdout == "alive\n"
        # Not one of the bomb's processes is left: none in the process group of the command's shell.
        group = result.stdout.split()[0]
        assert executor.run(f"ps -e -o pgid= | grep -cx ' *{group}' || true", 10).stdout == "0\n"
    finally:
        executor.close()


def test_container_death_is_reported_and_a_fresh_one_started(
    docker_engine: Any, sandbox: SandboxExecutor, project: Path
) -> None:
    assert sandbox.run("echo keep > kept.txt; echo lost > /tmp/lost.txt", 10).exit_code == 0
    assert sandbox.container_id is not None
    first = sandbox.container_id
    killer = threading.Timer(1.0, docker_engine.api.kill, [first])
    killer.start()
    result = sandbox.run("sleep 30", 60)
    killer.join()
    text = format_command(result, 60)
    assert text.startswith("ERROR: killed: the sandbox container stopped (exit code 137)")
    assert "anything outside the project (installed packages" in text
    assert sandbox.run("cat kept.txt; cat /tmp/lost.txt", 10).stdout == "keep\n"
    assert sandbox.container_id is not None and sandbox.container_id != first


def test_files_belong_to_the_user(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    if os.getuid() == 0:
        os.chown(project, 1234, 1234)
        user = "1234:1234"
    else:
        user = f"{os.getuid()}:{os.getgid()}"
    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, user=user, mounts=project_mounts(str(project))),
        20000,
    )
    try:
        assert (
            executor.run("mkdir -p d && echo x > d/by-shell.txt && touch ~/home-ok && id -u", 10).stdout
            == user.split(":")[0] + "\n"
        )
        executor.write_file("d/by-tool.txt", "y")
        if os.getuid() == 0:
            # The socket's folder is root's alone, so the runtime cannot listen there: the attach stream serves.
            assert executor.runtime is not None and isinstance(executor.runtime.transport, SocketTransport)
    finally:
        executor.close()
    for name in ("d", "d/by-shell.txt", "d/by-tool.txt"):
        stat = (project / name).stat()
        assert f"{stat.st_uid}:{stat.st_gid}" == user


def test_planted_symlink_never_reaches_outside_the_project_on_the_host(
    sandbox: SandboxExecutor, project: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("host secret")
    assert sandbox.run(f"ln -s {secret} link.txt && ln -s {outside} linkdir", 10).exit_code == 0
    assert (project / "link.txt").resolve() == secret  # on the host the link would lead out
    read = sandbox.run("true", 10)  # the sandbox is alive
    assert read.exit_code == 0
    with pytest.raises(FileOpError) as caught:
        sandbox.read_file("link.txt")
    assert "host secret" not in str(caught.value)
    for path in ("link.txt", "linkdir/new.txt"):
        with pytest.raises(FileOpError):
            sandbox.write_file(path, "overwritten")
    assert secret.read_text() == "host secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_cli_goal_runs_in_the_container_and_leaves_nothing(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add(
        tools(
            call(
                "write_file",
                {
                    "path": "where.py",
                    "content": "import os\nprint(b'exec(json.loads' in open('/proc/1/cmdline', 'rb').read())\n",
                },
            )
        ),
        tools(call("shell", {"command": "python3 where.py; hostname; env; cat /proc/1/environ | tr '\\0' '\\n'"})),
        message(f"{MARKER} ran in the sandbox"),
    )
    done = subprocess.run(
        _nanocode("-p", "where am I", "--project", str(project)),
        env=_env(tmp_path, api, OPENROUTER_API_KEY="sk-key-4242", HOST_ONLY="leak-me"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran in the sandbox\n"
    output = _tool_results(api)[1]
    assert output.startswith("True\nsandbox\n")
    assert "sk-key-4242" not in output and "leak-me" not in output
    system = text(api.requests[0]["messages"][0])
    assert "memory 2g" in system and "512 processes" in system and "no network" in system
    # Who runs the commands, as it is: the user who started nanocode (root in CI), never "unprivileged" by rote.
    assert ("as root (uid 0)" if os.getuid() == 0 else f"as uid {os.getuid()},") in system
    assert "unprivileged" not in system and "read-only" in system  # the bind workspace's git, as it is
    assert not [c for c in lifecycle.ours(docker_engine) if c.labels.get("nanocode.project") == str(project)]


def _start_goal(api: ScriptedAPI, project: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _nanocode("-p", "g", "--project", str(project)),
        env=_env(tmp_path, api),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_sleeping_goal(docker_engine: Any, api: ScriptedAPI, project: Path, tmp_path: Path) -> subprocess.Popen[str]:
    """A nanocode whose goal is inside a long command in its sandbox."""
    api.add(tools(call("shell", {"command": "sleep 300"})))
    process = _start_goal(api, project, tmp_path)
    _wait_for(lambda: len(api.requests) == 1 and _owned_by(docker_engine, process.pid))
    time.sleep(0.5)
    return process


def test_interrupt_removes_the_container(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    process = _start_sleeping_goal(docker_engine, api, project, tmp_path)
    try:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert not _owned_by(docker_engine, process.pid)


def test_requests_go_straight_to_the_runtime_through_a_private_socket(
    docker_engine: Any, sandbox: SandboxExecutor
) -> None:
    assert sandbox.runtime is not None and isinstance(sandbox.runtime.transport, DirectTransport)
    folder = sandbox.folder
    assert folder is not None and S_IMODE(os.stat(folder).st_mode) == 0o700
    # The socket's name is gone once the runtime is in: nothing else can connect.
    assert os.listdir(folder) == []
    written = sandbox.run("ls -A /run/nanocode; head -c 1000 /dev/zero > /run/nanocode/fill", 10)
    assert written.exit_code == 1 and "Read-only file system" in written.stderr
    assert os.listdir(folder) == []
    sandbox.write_file("via.txt", "through the socket")
    assert sandbox.read_file("via.txt") == "through the socket"
    sandbox.close()
    assert not os.path.exists(folder)


def test_an_engine_that_cannot_see_the_socket_folder_still_runs_the_sandbox(
    docker_engine: Any, sandbox_image: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with an engine in a VM or on another machine: the bind source does not exist where it runs.
    # Under /proc, where no engine can make it (Podman makes a missing bind source elsewhere).
    monkeypatch.setattr(channel, "make_folder", lambda goal: f"/proc/self/nanocode-{goal}-abcdefgh")
    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project))),
        20000,
    )
    try:
        assert executor.runtime is not None and isinstance(executor.runtime.transport, SocketTransport)
        assert executor.run("echo over the attach stream", 10).stdout == "over the attach stream\n"
    finally:
        executor.close()


def test_an_engine_that_refuses_the_socket_folder_at_start_still_runs_the_sandbox(
    docker_engine: Any, sandbox_image: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Docker Desktop refuses a mount it does not share when the container starts, not when it is made.
    made = []
    real_create = lifecycle.create

    def create_then_lose_the_folder(client: Any, config: SandboxConfig, goal: str, folder: str | None = None) -> Any:
        container = real_create(client, config, goal, folder)
        made.append(container.id)
        if folder is not None:
            os.rmdir(folder)
        return container

    monkeypatch.setattr(lifecycle, "create", create_then_lose_the_folder)
    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project))),
        20000,
    )
    try:
        assert executor.runtime is not None and isinstance(executor.runtime.transport, SocketTransport)
        assert executor.run("echo started again", 10).stdout == "started again\n"
        assert len(made) == 2 and executor.container_id == made[1]
        assert not [c for c in lifecycle.ours(docker_engine) if c.id == made[0]]
    finally:
        executor.close()


def test_output_to_the_containers_stdout_never_blocks(sandbox: SandboxExecutor) -> None:
    # Nothing reads replies there any more; what arrives is read and dropped.
    result = sandbox.run("head -c 5000000 /dev/zero > /proc/1/fd/1; echo done", 20)
    assert (result.stdout, result.timed_out) == ("done\n", False)


def test_kill_9_ends_the_sandbox_with_its_lease_and_the_next_start_removes_it(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    process = _start_sleeping_goal(docker_engine, api, project, tmp_path)
    process.kill()
    process.communicate()
    stale = _owned_by(docker_engine, process.pid)
    assert len(stale) == 1
    # The lease: its owner's connection gone, the runtime ends and the container stops, no start needed.
    _wait_for(lambda: [c.status for c in _owned_by(docker_engine, process.pid)] == ["exited"], 15)
    goal = stale[0].labels["nanocode.goal"]
    assert glob.glob(os.path.join(tempfile.gettempdir(), f"nanocode-{goal}-*"))  # its socket's folder
    listing = subprocess.run([sys.executable, "-m", "nanocode", "sandbox", "ls"], capture_output=True, text=True)
    assert [line for line in listing.stdout.splitlines() if stale[0].name in line and "dead" in line]

    api.add(message(f"{MARKER} next goal"))
    done = subprocess.run(
        _nanocode("-p", "next", "--project", str(project)),
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"removed stale sandbox container {stale[0].name}" in done.stderr
    assert not _owned_by(docker_engine, process.pid)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"nanocode-{goal}-*"))


def test_sandbox_prune_command(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    # Stands for the container of another nanocode whose lease ended: stopped.
    other_run = {"nanocode.owner.pid": str(dead.pid), "nanocode.owner.run": "another-run"}
    labels = lifecycle.owner_labels("orphan", str(project)) | other_run
    alive = lifecycle.owner_labels("alive", str(project))  # this process's, which must stay
    orphan = docker_engine.containers.run(
        sandbox_image, ["true"], labels=labels, name=f"nanocode-o-{dead.pid}", detach=True
    )
    orphan.wait(timeout=30)
    kept = docker_engine.containers.create(sandbox_image, ["true"], labels=alive, name=f"nanocode-k-{dead.pid}")
    network = docker_engine.networks.create(f"nanocode-net-o{dead.pid}", labels=labels)
    volume = docker_engine.volumes.create(f"nanocode-vol-o{dead.pid}", labels=labels)
    hosts = Path(tempfile.gettempdir(), f"nanocode-hosts-o{dead.pid}-x")  # its network's /etc/hosts
    hosts.write_text("")
    # Socket folders: one left by a nanocode killed before its container existed, one of a goal
    # starting right now, and a folder of someone else's with a like name.
    left = Path(tempfile.mkdtemp(prefix="nanocode-0123456789ab-"))
    starting = Path(tempfile.mkdtemp(prefix="nanocode-ba9876543210-"))
    other = Path(tempfile.mkdtemp(prefix="nanocode-bench-"))
    for path in (left, other):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    # A link named like a socket folder, to a folder whose socket must stay.
    pointed = Path(tempfile.mkdtemp(prefix="nanocode-test-"))
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(str(pointed / channel.SOCKET_NAME))
    link = Path(tempfile.gettempdir(), "nanocode-0123456789ac-abcdefgh")
    link.symlink_to(pointed)
    os.utime(link, (time.time() - 3600, time.time() - 3600), follow_symlinks=False)
    try:
        pruned = subprocess.run(
            [sys.executable, "-m", "nanocode", "sandbox", "prune"], capture_output=True, text=True, timeout=60
        )
        assert pruned.returncode == 0
        assert orphan.name in pruned.stdout and kept.name not in pruned.stdout
        # Any nanocode starting on this engine meanwhile may remove the network or volume first: that
        # they are gone is what holds, and that the summary counts what was named.
        summary = re.search(
            r"^removed (\d+) containers?, (\d+) networks? and (\d+) volumes? of goals", pruned.stderr, re.M
        )
        assert summary and sum(map(int, summary.groups())) == len(pruned.stdout.split()), pruned.stderr
        assert not hosts.exists()
        assert not docker_engine.api.networks(names=[network.name])
        assert volume.name not in [v.name for v in docker_engine.volumes.list(filters={"label": "nanocode"})]
        assert [c.id for c in lifecycle.ours(docker_engine) if c.id in (orphan.id, kept.id)] == [kept.id]
        assert (left.exists(), starting.exists(), other.exists()) == (False, True, True)
        assert (pointed / channel.SOCKET_NAME).exists()
    finally:
        held.close()
        link.unlink()
        (pointed / channel.SOCKET_NAME).unlink()
        for path in (left, starting, other, pointed):
            if path.exists():
                path.rmdir()
        for item in (orphan, kept):
            lifecycle.remove(docker_engine, item.id)
        hosts.unlink(missing_ok=True)
        with contextlib.suppress(NotFound):
            network.remove()
        with contextlib.suppress(NotFound):
            volume.remove(force=True)


def test_transcript_of_a_sandboxed_goal(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add(tools(call("shell", {"command": "id -u"})), message(f"{MARKER} ok"))
    transcript = tmp_path / "t.jsonl"
    done = subprocess.run(
        _nanocode("-p", "g", "--project", str(project), "--transcript", str(transcript)),
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert entries[0]["sandbox"] is True
    assert [e["result"] for e in entries if e["kind"] == "tool"] == [f"{os.getuid()}\n"]


def _wait_for(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_home_and_tmp_allow_programs(sandbox: SandboxExecutor) -> None:
    result = sandbox.run(
        "python3 -m venv /tmp/v && /tmp/v/bin/python -c 'print(1)' && "
        "mkdir -p ~/bin && printf '#!/bin/sh\\necho from-home\\n' > ~/bin/hi && chmod +x ~/bin/hi && ~/bin/hi",
        120,
    )
    assert result.stdout == "1\nfrom-home\n", result.stderr


def test_a_full_process_limit_frees_what_earlier_commands_left(
    docker_engine: Any, sandbox_image: str, project: Path
) -> None:
    config = SandboxConfig(project=str(project), image=sandbox_image, pids=24, mounts=project_mounts(str(project)))
    executor = SandboxExecutor(docker_engine, config, 20000)
    try:
        assert executor.run("for i in $(seq 16); do sleep 300 > /dev/null 2>&1 & done; echo ok", 10).stdout == "ok\n"
        result = executor.run("ps -e --no-headers | wc -l", 10)
        assert result.exit_code == 0, result.stderr
        assert "the process limit was reached" in result.stderr
        assert int(result.stdout) < 10
    finally:
        executor.close()


def test_an_image_with_its_own_entrypoint(
    docker_engine: Any, sandbox_image: str, project: Path, tmp_path: Path
) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f'FROM {sandbox_image}\nENTRYPOINT ["git"]\nCMD ["--version"]\n')
    tag = f"nanocode-test-entrypoint:{os.getpid()}"
    docker_engine.images.build(path=str(tmp_path / "ctx"), tag=tag, rm=True)
    try:
        executor = SandboxExecutor(
            docker_engine, SandboxConfig(project=str(project), image=tag, mounts=project_mounts(str(project))), 20000
        )
        try:
            assert executor.run("echo runs", 10).stdout == "runs\n"
        finally:
            executor.close()
    finally:
        docker_engine.images.remove(tag, force=True)


def test_an_interrupt_while_the_sandbox_starts_leaves_nothing(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    for delay in (0.25, 0.35, 0.45, 0.55, 0.65):
        api.add(message(f"{MARKER} quick"))
        process = _start_goal(api, project, tmp_path)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr
        assert not _owned_by(docker_engine, process.pid), f"left behind after an interrupt at {delay}s"
