"""The executor contract, held by both executors: the host one and the Docker sandbox."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanocode.errors import FileOpError
from nanocode.host import HostExecutor
from nanocode.interfaces import Executor
from nanocode.tools import format_command
from tests.docker_support import gvisor_runtime

CAP = 20000


@pytest.fixture(params=["host", "sandbox", "gvisor"])
def executor(request: pytest.FixtureRequest, project: Path) -> Iterator[Executor]:
    if request.param == "host":
        ex: Executor = HostExecutor(str(project), CAP, [])
    else:
        from nanocode.sandbox.container import SandboxConfig
        from nanocode.sandbox.executor import SandboxExecutor
        from nanocode.sandbox.protect import project_mounts

        client = request.getfixturevalue("docker_engine")
        image = request.getfixturevalue("sandbox_image")
        runtime = gvisor_runtime(client) if request.param == "gvisor" else None
        ex = SandboxExecutor(
            client,
            SandboxConfig(project=str(project), image=image, runtime=runtime, mounts=project_mounts(str(project))),
            CAP,
        )
    yield ex
    ex.close()


def under_gvisor(executor: Executor, reason: str) -> None:
    """Marks, with its reason, what cannot hold under gVisor (Debian 12's runsc, release 2022-12)."""
    from nanocode.sandbox.executor import SandboxExecutor

    if isinstance(executor, SandboxExecutor) and executor.config.runtime == "runsc":
        pytest.xfail(f"gVisor: {reason}")


NO_SERVER = "no child subreaper, so no shell server: each command is a new bash, and $$ is its own"


def test_command_output_and_exit_code(executor: Executor, project: Path) -> None:
    result = executor.run("echo out; echo err >&2; exit 3", 10)
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("out\n", "err\n", 3, False)
    assert executor.run("pwd", 10).stdout.strip() == str(project)


def test_a_running_commands_output_is_watched_as_it_comes(executor: Executor) -> None:
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    command = "for i in 1 2 3 4; do echo step $i; sleep 0.5; done; echo done"
    result = executor.run(command, 30, lambda text: seen.append((time.monotonic() - started, text)))
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "done"
    assert len(seen) >= 3, seen  # while it ran, not at its end
    early = [text for at, text in seen if at < 1.4]
    assert early and "step 1" in early[0], seen
    assert executor.run("echo quiet", 10).stdout == "quiet\n"  # and nothing is said where nobody watches


def test_nothing_waits_for_a_person(executor: Executor) -> None:
    result = executor.run('read -r line; echo "got [$line]"; echo $PAGER', 10)
    assert result.stdout == "got []\ncat\n"
    assert result.exit_code == 0


def test_timeout_kills_the_whole_tree_including_setsid_grandchildren(executor: Executor, project: Path) -> None:
    marker = f"nanocode-test-{time.monotonic_ns()}"
    command = (
        f"echo started; (setsid bash -c 'exec -a {marker} sleep 300' &) ; "
        f"bash -c 'exec -a {marker} sleep 300' & sleep 300"
    )
    started = time.monotonic()
    result = executor.run(command, 1)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert result.exit_code is None
    assert result.stdout == "started\n"
    assert elapsed < 3
    assert "stopped after 1s (timeout)" in format_command(result, 1)
    left = executor.run(f"ps -eo args | grep -c '^{marker}' || true", 10).stdout.strip()
    assert left == "0"


def test_ten_megabytes_of_output_are_capped(executor: Executor) -> None:
    result = executor.run("head -c 10000000 /dev/zero | tr '\\0' a; echo; echo the-end", 30)
    assert result.exit_code == 0
    assert len(result.stdout) < CAP + 200
    assert result.stdout.startswith("aaaa")
    assert result.stdout.rstrip().endswith("the-end")
    assert "bytes cut" in result.stdout
    assert result.cut > 9_900_000


def test_write_then_read_creates_parents(executor: Executor, project: Path) -> None:
    executor.write_file("deep/er/file.txt", "héllo\n")
    assert (project / "deep/er/file.txt").read_text() == "héllo\n"
    assert executor.read_file("deep/er/file.txt") == "héllo\n"
    assert executor.run("cat deep/er/file.txt", 10).stdout == "héllo\n"


def test_file_errors_raise_file_op_error(executor: Executor) -> None:
    with pytest.raises(FileOpError, match="No such file"):
        executor.read_file("nope.txt")
    with pytest.raises(FileOpError):
        executor.read_file(".")


def test_large_file_read_is_capped(executor: Executor, project: Path) -> None:
    (project / "big.txt").write_text("x" * (CAP * 3))
    content = executor.read_file("big.txt")
    assert len(content) < CAP + 200
    assert "only the first" in content


def test_a_line_range_of_a_file_larger_than_the_cap(executor: Executor, project: Path) -> None:
    (project / "many.txt").write_text("".join(f"line {n}\n" for n in range(1, 200_001)))  # ~2 MB, past the cap
    assert executor.read_file("many.txt", (150_000, 150_002)) == "line 150000\nline 150001\nline 150002\n"
    assert executor.read_file("many.txt", (199_999, 300_000)) == "line 199999\nline 200000\n"
    assert executor.read_file("many.txt", (300_000, 300_001)).startswith("(no lines 300000 to 300001")
    (project / "one.txt").write_text("x" * 3_000_000 + "\nsecond\n")  # a line past the cap is never held whole
    first = executor.read_file("one.txt", (1, 2))
    assert first.startswith("x" * 1000) and len(first) < CAP + 200 and "cut at" in first
    assert executor.read_file("one.txt", (2, 2)) == "second\n"


def test_background_job_with_redirected_output_does_not_block(executor: Executor) -> None:
    started = time.monotonic()
    result = executor.run("sleep 30 > /dev/null 2>&1 & echo started", 10)
    assert result.stdout == "started\n"
    assert time.monotonic() - started < 5


def test_waiting_shells_and_their_server_killed_are_replaced(executor: Executor) -> None:
    # Shells for the next commands wait ready, forked by a shell server; a command may kill them all.
    killed = executor.run("for p in $(ps -o pid= --ppid $PPID); do [ $p = $BASHPID ] || kill -9 $p; done; echo ok", 10)
    assert killed.stdout == "ok\n", killed.stderr
    started = time.monotonic()
    assert executor.run("echo still works", 10).stdout == "still works\n"
    assert time.monotonic() - started < 3


def test_signals_to_dollar_dollar_end_neither_the_command_nor_the_runtime(executor: Executor) -> None:
    under_gvisor(executor, NO_SERVER)
    # `$$` names the shell server, not the command's shell: it must survive what a command sends it.
    result = executor.run("kill $$; kill -INT $$; kill -9 $$; echo survived", 10)
    assert (result.stdout, result.exit_code) == ("survived\n", 0), result.stderr
    assert executor.run("echo next", 10).stdout == "next\n"


def test_lines_forged_on_the_servers_report_pipe_are_ignored(executor: Executor) -> None:
    under_gvisor(executor, NO_SERVER)
    # Anything in the sandbox can write where the forked shells say their pids.
    forged = executor.run('for n in $(seq 1 40); do echo "$n $PPID"; echo "$n $$"; done > /proc/$$/fd/4', 10)
    assert forged.exit_code == 0, forged.stderr
    for _ in range(4):
        assert executor.run("echo fine", 10).stdout == "fine\n"
    assert executor.run("sleep 30", 1).timed_out  # a timeout kills the command, not the runtime
    assert executor.run("echo alive", 10).stdout == "alive\n"


def test_each_command_has_a_process_group_and_default_signals(executor: Executor) -> None:
    assert executor.run("sleep 300 > /dev/null 2>&1 & echo $! > bg.pid", 10).exit_code == 0
    ended = executor.run("sleep 300 > /dev/null 2>&1 & kill 0", 10)  # the command's group only
    assert (ended.exit_code, ended.signal, ended.timed_out) == (None, 15, False)
    assert executor.run("kill -0 $(cat bg.pid) && echo alive", 10).stdout == "alive\n"
    under_gvisor(executor, "its /proc/PID/status has no SigIgn line")
    ignored = executor.run("grep SigIgn /proc/$BASHPID/status; sh -c 'grep SigIgn /proc/$$/status'", 10)
    masks = [int(line.split()[1], 16) for line in ignored.stdout.splitlines()]
    # Signals 1 to 31 (SIGINT, SIGPIPE, SIGXFSZ...): none ignored; glibc keeps 32 and 33 for itself.
    assert len(masks) == 2 and not any(mask & 0x7FFFFFFF for mask in masks), ignored.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('SHELL = "/bin/bash" if', 'SHELL = "/bin/sh" if False and'),  # an image with only sh
        ('>"$o" 2>"$e"', '>"/nowhere/$o" 2>"/nowhere/$e"'),  # forked shells cannot reach their pipes
    ],
    ids=["only-sh", "no-forked-shells"],
)
def test_a_new_shell_per_command_where_shells_cannot_be_forked(project: Path, old: str, new: str) -> None:
    """Each command then gets a fresh shell, with the same guarantees."""
    import subprocess
    import sys

    from nanocode.host import PipeTransport
    from nanocode.runtime import client

    source = client.SERVER_SOURCE.replace(old, new)
    assert source != client.SERVER_SOURCE
    process = subprocess.Popen(
        [sys.executable, *client.BOOTSTRAP[1:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=project,
        start_new_session=True,
    )
    runtime = client.RuntimeClient(PipeTransport(process), str(project), CAP, source=source)
    try:
        started = time.monotonic()
        for _ in range(3):
            assert runtime.run("echo $0; echo err >&2; exit 2", 10).stdout == "sh\n"
        assert time.monotonic() - started < 2
        result = runtime.run("(setsid sleep 311 &); sleep 311", 1)
        assert result.timed_out
        assert runtime.run("pgrep -f '^sleep 311' || echo none", 10).stdout == "none\n"
    finally:
        runtime.close()


def test_requests_move_to_a_socket_and_the_pipes_still_end_the_runtime(project: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from nanocode.host import PipeTransport
    from nanocode.runtime import client
    from nanocode.sandbox.channel import DirectTransport, go_direct

    process = subprocess.Popen(
        [sys.executable, *client.BOOTSTRAP[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=project
    )
    pipes = PipeTransport(process)
    runtime = client.RuntimeClient(pipes, str(project), CAP)
    folder = tmp_path / "channel"
    folder.mkdir()
    try:
        refused = runtime.request("socket", 10, path=str(folder / "nobody-listens"), token="t")
        assert not refused["ok"]
        assert runtime.run("echo still on the pipes", 10).stdout == "still on the pipes\n"
        assert not go_direct(runtime, pipes, str(folder), inside=str(tmp_path / "elsewhere"))
        assert runtime.transport is pipes and os.listdir(folder) == []

        assert go_direct(runtime, pipes, str(folder), inside=str(folder))
        assert isinstance(runtime.transport, DirectTransport)
        assert os.listdir(folder) == []  # the socket's name is gone: nothing else can connect
        assert runtime.run("echo through the socket", 10).stdout == "through the socket\n"
        assert process.stdin is not None
        process.stdin.close()  # the client gone: the runtime ends, socket or not
        assert process.wait(timeout=5) == 0
    finally:
        runtime.close()


def test_special_and_binary_files(executor: Executor, project: Path) -> None:
    assert executor.run("mkfifo pipe", 10).exit_code == 0
    started = time.monotonic()
    for call in (
        lambda: executor.read_file("pipe"),
        lambda: executor.write_file("pipe", "x"),
        lambda: executor.write_file("/dev/stdout", '{"id": 1, "ok": true}'),
        lambda: executor.read_file("/dev/stdin"),
    ):
        with pytest.raises(FileOpError, match="not a regular file"):
            call()
    assert time.monotonic() - started < 5
    (project / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    assert executor.read_file("blob.bin").startswith("(a binary file of 300 bytes")
    assert executor.run("echo still here", 10).stdout == "still here\n"


def test_a_dead_runtime_is_replaced(executor: Executor) -> None:
    pid = executor.run("echo $PPID", 10).stdout.strip()
    died = executor.run(f"kill -9 {pid}", 10)
    assert died.exit_code is None
    assert "died" in died.killed or "stopped" in died.killed
    assert executor.run("echo back", 10).stdout == "back\n"
    executor.write_file("after.txt", "ok")
    assert executor.read_file("after.txt") == "ok"


def test_orphans_are_reaped_while_the_runtime_waits(executor: Executor) -> None:
    started = executor.run(
        "sleep 1000 > /dev/null 2>&1 & echo $! > bg.pid; "
        "(while true; do (true &); sleep 0.02; done) > /dev/null 2>&1 & echo $! > loop.pid",
        10,
    )
    assert started.exit_code == 0
    time.sleep(2)
    zombies = executor.run("ps -eo stat=,ppid= | awk -v p=$PPID '$1 ~ /^Z/ && $2 == p' | wc -l", 10)
    executor.run("kill $(cat loop.pid)", 10)
    assert int(zombies.stdout) < 15
    assert executor.run("kill -0 $(cat bg.pid) && echo alive", 10).stdout == "alive\n"


def test_odd_text_in_a_command(executor: Executor, project: Path) -> None:
    refused = executor.run("echo \ud800", 10)
    assert refused.exit_code is None and "could not start" in refused.stderr
    assert executor.run("printf '%s\\n' \"it's\" 'a \"quoted\" line'", 10).stdout == 'it\'s\na "quoted" line\n'
    assert executor.run("echo " + "x" * 1_000_000 + " | wc -c", 30).stdout == "1000001\n"


def test_stopped_ready_shells_are_not_used(executor: Executor) -> None:
    executor.run("pkill -STOP -P $PPID -x bash", 3)  # stops the waiting shells, and itself
    started = time.monotonic()
    assert executor.run("echo fine", 10).stdout == "fine\n"
    assert time.monotonic() - started < 3


def test_a_fresh_runtime_runs_its_first_commands_in_forked_shells(project: Path) -> None:
    # Bash still holds the report pipe as its stdout for a moment after it says its pid: a shell
    # checked in that moment must not be taken for a forgery, and its command sent to a new shell.
    for _ in range(10):
        runtime = HostExecutor(str(project), CAP, [])
        try:
            shells = runtime.run("echo $$ $BASHPID", 10).stdout.split()
        finally:
            runtime.close()
        assert len(shells) == 2 and shells[0] != shells[1]


def test_commands_no_shell_can_take_leave_nothing_behind(executor: Executor) -> None:
    count = "ps --ppid $PPID --no-headers | wc -l"
    before = int(executor.run(count, 10).stdout)
    for _ in range(10):
        assert "could not start" in executor.run("echo \ud800", 10).stderr
    assert int(executor.run(count, 10).stdout) <= before + 1  # one more shell may be on its way


@pytest.mark.parametrize("heard", ["silence", "heartbeats"])
def test_the_runtime_ends_with_its_command_when_its_owner_is_silent_past_the_lease(project: Path, heard: str) -> None:
    """The lease, with stdin still open: silence ends the runtime and what it runs; heartbeats keep it."""
    import subprocess
    import sys

    from nanocode.host import PipeTransport
    from nanocode.runtime import client

    process = subprocess.Popen(
        [sys.executable, *client.BOOTSTRAP[1:], "--lease", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=project,
        start_new_session=True,
    )
    pipes = PipeTransport(process)
    runtime = client.RuntimeClient(pipes, str(project), CAP)
    try:
        if heard == "heartbeats":
            for _ in range(6):
                pipes.send(b"\n")
                time.sleep(0.5)
            assert runtime.run("echo held", 10).stdout == "held\n"
            return
        with pytest.raises(client.RuntimeExited):
            runtime.run("sleep 313", 30)
        assert process.wait(timeout=5) == 0
        assert subprocess.run(["pgrep", "-f", "^sleep 313"], capture_output=True).returncode == 1
    finally:
        runtime.close()
        process.kill()


# From inside: PTRACE_ATTACH (16) on the runtime, and its memory opened for writing.
TAMPER = """python3 -c '
import ctypes, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(16, pid, 0, 0), ctypes.get_errno())
try:
    with open("/proc/%d/mem" % pid, "r+b") as mem:
        print("mem opened")
except OSError as exc:
    print("mem", exc.errno)
' """


@pytest.mark.parametrize("user", ["sandbox-user", "root"])
@pytest.mark.parametrize("oci", ["runc", "gvisor"])
def test_commands_cannot_trace_the_runtime_or_write_its_memory(
    docker_engine: object, sandbox_image: str, project: Path, user: str, oci: str
) -> None:
    """The runtime is not dumpable: neither the sandbox's user nor its root (its capabilities dropped)
    may attach to it or open its memory; commands still get their output through its pipes."""
    import errno

    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor
    from nanocode.sandbox.protect import project_mounts

    config = SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project)))
    if user == "root":
        config.user = "0:0"
    if oci == "gvisor":
        config.runtime = gvisor_runtime(docker_engine)
    executor = SandboxExecutor(docker_engine, config, CAP)  # type: ignore[arg-type]
    try:
        assert executor.runtime is not None
        pid = executor.runtime.hello["pid"]
        result = executor.run(TAMPER + str(pid), 30)
        assert result.stdout.splitlines() == [f"ptrace -1 {errno.EPERM}", f"mem {errno.EACCES}"], result
        assert executor.run("echo still served", 10).stdout == "still served\n"
    finally:
        executor.close()


def test_the_host_runtime_leaves_no_folder_of_pipes_even_when_killed(project: Path) -> None:
    import signal

    executor = HostExecutor(str(project), CAP, [])
    assert executor.runtime is not None
    first, pid = executor.runtime.hello["shells"], executor.runtime.hello["pid"]
    assert os.path.isdir(first)
    assert executor.run("echo one", 10).stdout == "one\n"
    os.kill(pid, signal.SIGKILL)  # nothing of the runtime cleans up after this
    assert executor.run("echo lost", 10).killed  # the call that saw it die
    assert executor.runtime is None and not os.path.exists(first)
    assert executor.run("echo two", 10).stdout == "two\n"
    assert executor.runtime is not None
    second = executor.runtime.hello["shells"]
    executor.close()
    assert not os.path.exists(second)
