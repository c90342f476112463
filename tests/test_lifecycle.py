"""The lifecycle at its edges: signals, nanocode killed, a runtime that lies, settings that cannot work."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.scripted_api import ScriptedAPI, call, tools


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE", "MODEL"))}
    return env | {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test"} | extra


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://",
        "http:///v1",
        "http://localhost:port/v1",
        "http://localhost:99999",
        "http://a b/v1",
        " https://openrouter.ai/api/v1",
        "ftp://example.com/v1",
        "localhost:8080/v1",
    ],
)
def test_a_base_url_that_cannot_work_is_one_line_and_exit_3(project: Path, tmp_path: Path, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(project)],
        env=_env(tmp_path, INFERENCE_BASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "base URL" in done.stderr and "internal error" not in done.stderr


def _goal(api: ScriptedAPI, project: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """A real nanocode, working on a goal the scripted endpoint leads."""
    return subprocess.Popen(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(project), *args],
        env=_env(tmp_path, INFERENCE_BASE_URL=api.url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def _running(marker: str) -> list[int]:
    """The live processes whose command line starts with the marker (a zombie is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if not f.read().startswith(marker.encode()):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize("second", [0.02, 0.1, 0.3])
def test_a_second_signal_while_a_goal_stops_still_exits_130(
    api: ScriptedAPI, project: Path, tmp_path: Path, second: float
) -> None:
    for attempt in range(3):
        marker = f"nanocode-twice-{time.monotonic_ns()}"
        api.add(tools(call("shell", {"command": f"bash -c 'exec -a {marker} sleep 300'"})))
        process = _goal(api, project, tmp_path)
        try:
            _wait_for(lambda marker=marker: _running(marker))
            process.send_signal(signal.SIGINT)
            time.sleep(second)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 130, f"attempt {attempt}: {process.returncode} {stderr}"
        assert "nanocode: interrupted" in stderr and "Traceback" not in stderr
        assert not _running(marker)


def _owned_by(docker_engine: Any, pid: int) -> list[Any]:
    from nanocode.sandbox import container as lifecycle

    return [c for c in lifecycle.ours(docker_engine) if c.labels.get("nanocode.owner.pid") == str(pid)]


@pytest.mark.usefixtures("no_leftovers")
def test_two_signals_as_the_sandbox_starts_leave_no_folder_and_no_container(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path, request: Any
) -> None:
    runtime_dir = Path(tempfile.mkdtemp(prefix="nc-"))  # short: the socket's path has a limit
    request.addfinalizer(runtime_dir.rmdir)
    for attempt in range(5):
        api.add(tools(call("shell", {"command": "sleep 300"})))
        process = _goal(api, project, tmp_path, "--sandbox", XDG_RUNTIME_DIR=str(runtime_dir))
        try:
            _wait_for(lambda process=process: _owned_by(docker_engine, process.pid))
            process.send_signal(signal.SIGINT)
            time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 130, f"attempt {attempt}: {process.returncode} {stderr}"
        assert "Traceback" not in stderr
        assert not _owned_by(docker_engine, process.pid), f"attempt {attempt}: a container was left"
        assert os.listdir(runtime_dir) == [], f"attempt {attempt}: a socket folder was left"


def test_a_socket_folder_goes_with_its_goal_s_container_never_by_its_pid(
    docker_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanocode.sandbox import channel
    from nanocode.sandbox import container as lifecycle

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    mine = Path(channel.make_folder("0123456789ab"))  # a goal starting right now: no container yet
    assert re.fullmatch(r"nanocode-0123456789ab-[0-9a-f]{8}", mine.name)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # Named by an older version for an owner that looks gone (it may live in another pid namespace),
    # and left long ago by a nanocode killed before its container existed.
    young = tmp_path / f"nanocode-ba9876543210-{dead.pid}-1234"
    old = tmp_path / "nanocode-ba9876543211-0a1b2c3d"
    for path in (young, old):
        path.mkdir(mode=0o700)
    os.utime(old, (time.time() - 2 * lifecycle.START_GRACE,) * 2)
    lifecycle.prune_containers(docker_engine)
    assert [path.exists() for path in (mine, young, old)] == [True, True, False]
    mine.rmdir()
    young.rmdir()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_nanocode_killed_during_a_command_ends_the_runtime_and_the_command_on_the_host(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    marker = f"nanocode-orphaned-{time.monotonic_ns()}"
    api.add(tools(call("shell", {"command": f"bash -c 'exec -a {marker} sleep 400' & sleep 400"})))
    process = _goal(api, project, tmp_path)
    try:
        _wait_for(lambda: _running(marker))
        runtimes = _children(process.pid)
        assert len(runtimes) == 1
    finally:
        process.kill()
        process.communicate()
    # The runtime was waiting for a command that runs for minutes: only the end of its stdin tells it.
    _wait_for(lambda: not _alive(runtimes[0]) and not _running(marker), 15)


@pytest.mark.usefixtures("no_leftovers")
def test_nanocode_killed_during_a_command_stops_its_container(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    from nanocode.sandbox import container as lifecycle

    api.add(tools(call("shell", {"command": "sleep 400"})))
    process = _goal(api, project, tmp_path, "--sandbox")
    try:
        _wait_for(lambda: len(api.requests) == 1 and _owned_by(docker_engine, process.pid))
        [container] = _owned_by(docker_engine, process.pid)
        _wait_for(lambda: "sleep 400" in str(docker_engine.api.top(container.id)["Processes"]))
    finally:
        process.kill()
        process.communicate()
    try:
        _wait_for(lambda: not docker_engine.api.inspect_container(container.id)["State"]["Running"], 15)
    finally:
        lifecycle.remove(docker_engine, container.id)


def _hostile(kind: str, request: pytest.FixtureRequest, project: Path) -> Any:
    """An executor whose runtime turns hostile when asked (see tests/hostile_runtime.py)."""
    from nanocode.host import HostExecutor
    from tests.hostile_runtime import HOSTILE_SOURCE

    if kind == "host":
        return type("HostileHost", (HostExecutor,), {"source": HOSTILE_SOURCE})(str(project), 20000, [])
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor
    from nanocode.sandbox.protect import project_mounts

    hostile = type("HostileSandbox", (SandboxExecutor,), {"source": HOSTILE_SOURCE})
    config = SandboxConfig(
        project=str(project), image=request.getfixturevalue("sandbox_image"), mounts=project_mounts(str(project))
    )
    return hostile(request.getfixturevalue("docker_engine"), config, 20000)


def _hostile_call(executor: Any, op: str, mode: str) -> str:
    from nanocode.errors import FileOpError
    from nanocode.tools import format_command

    try:
        if op == "run":
            return format_command(executor.run(f"echo HOSTILE:{mode}", 10), 10)
        if op == "read":
            return executor.read_file(f"HOSTILE:{mode}")  # type: ignore[no-any-return]
        executor.write_file("written.txt", f"HOSTILE:{mode}")
    except FileOpError as exc:
        return str(exc)
    return "written"


@pytest.mark.parametrize("op", ["run", "read", "write"])
@pytest.mark.parametrize("kind", ["host", "sandbox"])
def test_a_hostile_runtime_is_a_malformed_reply_and_a_fresh_runtime(
    request: pytest.FixtureRequest, project: Path, kind: str, op: str
) -> None:
    from tests.hostile_runtime import FIELDS, MODES

    if kind == "sandbox":
        request.getfixturevalue("no_leftovers")
    said = "the sandbox sent a malformed reply" if kind == "sandbox" else "the tool runtime sent a malformed reply"
    for mode in [*MODES, *FIELDS[op], "cut-off", "none"]:
        (project / f"HOSTILE:{mode}").write_text("to read")
    executor = _hostile(kind, request, project)
    try:
        for mode in [*MODES, *FIELDS[op]]:
            assert _hostile_call(executor, op, "none") in ("HOSTILE:none\n", "to read", "written")
            before = getattr(executor, "container_id", None)
            result = _hostile_call(executor, op, mode)
            assert said in result, f"{mode}: {result}"
            fresh = executor.run("echo fresh", 10)
            assert fresh.stdout == "fresh\n", (mode, fresh)
            if kind == "sandbox":
                assert executor.container_id != before
        gone = _hostile_call(executor, op, "cut-off")
        assert "died" in gone or "stopped" in gone, gone
        assert executor.run("echo fresh", 10).stdout == "fresh\n"
    finally:
        executor.close()


HOG = "python3 -c \"a = []\nwhile True: a.append(b'x' * 10**6)\""


@pytest.mark.usefixtures("no_leftovers")
def test_out_of_memory_is_told_only_when_it_happened_during_the_call(
    docker_engine: Any, sandbox_image: str, project: Path
) -> None:
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor
    from nanocode.sandbox.protect import project_mounts
    from nanocode.tools import format_command

    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, memory="64m", mounts=project_mounts(str(project))),
        20000,
    )
    try:
        killed = format_command(executor.run(HOG, 60), 60)
        assert killed.startswith("ERROR: killed: out of memory (limit 64m)"), killed
        assert executor.run("echo survived", 10).stdout == "survived\n"
        # The container dies of something else: Docker's OOMKilled flag is still set from the command above.
        died = format_command(executor.run("kill 1; sleep 5", 30), 30)
        assert died.startswith("ERROR: killed: the sandbox container stopped (exit code"), died
        assert "out of memory" not in died
        for _ in range(2):  # killed as the kernel kills for memory, but by a command, right after an OOM kill
            assert executor.run(HOG, 60).killed.startswith("out of memory")
            died = format_command(executor.run("kill -9 $PPID", 30), 30)
            assert died.startswith("ERROR: killed: the sandbox container stopped (exit code 137)"), died
        # And where the runtime itself is what the kernel kills for memory, the container dies of it.
        runtime_killed = format_command(executor.run(f"echo 1000 > /proc/$PPID/oom_score_adj; {HOG}", 60), 60)
        assert runtime_killed.startswith("ERROR: killed: out of memory (limit 64m); the sandbox container died")
        assert executor.run("echo back", 10).stdout == "back\n"
    finally:
        executor.close()


def test_signals_while_a_goal_stops_are_held_and_a_sigterm_still_ends_the_repl() -> None:
    from nanocode.signals import Signals, Terminated

    before = signal.getsignal(signal.SIGTERM)
    signals = Signals()
    with pytest.raises(KeyboardInterrupt), signals.goal():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
    for sig in (signal.SIGINT, signal.SIGTERM):  # while the goal stops: held, nothing raised
        os.kill(os.getpid(), sig)
    time.sleep(0.1)
    assert signals.held == [signal.SIGINT, signal.SIGTERM]
    assert signals.resume()  # the REPL ends too
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(Terminated), signals.goal():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert not signals.resume()


def test_folders_named_to_mislead_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanocode.sandbox import channel

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    odd = [tmp_path / f"nanocode-0123456789ab-{'9' * 200}-1", tmp_path / "nanocode-0123456789ab-99999999999-1"]
    for path in odd:
        path.mkdir()
    for path in odd:
        os.utime(path, (0, 0))
    channel.remove_orphan_folders(set(), 1.0)
    assert all(path.exists() for path in odd)
