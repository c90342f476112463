"""nanocode.batch.apart: work in a child process, and what the parent hears of how it ended. Each case
runs a parent of its own (a subprocess), so that the signals sent stay between it and its child."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.test_batch import wait_for

PARENT = """
import os, sys, time
from pathlib import Path
from nanocode.batch.apart import apart
from nanocode.errors import ConfigError

folder = Path(sys.argv[1])

def after():
{after}

def work():
    (folder / "child").write_text(str(os.getpid()))
    try:
{work}
    except KeyboardInterrupt:
        (folder / "stopped").write_text("")
        raise

{before}
try:
    print("code", apart(work, after))
except Exception as exc:
    print("error", exc.exit_code, exc.format_message())
"""


def _parent(tmp_path: Path, work: str, after: str = "pass", before: str = "") -> subprocess.Popen[str]:
    """A parent whose child runs `work`, then `after`; `before` runs in the parent before apart."""
    indent = textwrap.indent
    script = PARENT.format(work=indent(work, " " * 8), after=indent(after, " " * 4), before=before)
    command = [sys.executable, "-c", script, str(tmp_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _heard(tmp_path: Path, work: str, **more: str) -> str:
    parent = _parent(tmp_path, work, **more)
    try:
        out, err = parent.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # neither is left behind: the child may be stopped, or waiting
        parent.kill()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int((tmp_path / "child").read_text()), signal.SIGKILL)
        raise
    assert parent.returncode == 0, err
    return out.strip()


@pytest.mark.parametrize(
    ("work", "heard"),
    [
        ("return 4", "code 4"),
        ("raise ConfigError('no engine')", "error 3 no engine"),
        ("raise KeyboardInterrupt", "error 130 interrupted"),
        ("raise RuntimeError('boom')", "error 1 internal error: RuntimeError: boom"),
        ("os._exit(1)", "code None"),  # as Ray ends a driver: no word, no clean-up
        ("os.kill(os.getpid(), 9)", "code None"),
    ],
)
def test_the_parent_hears_how_the_child_ended_or_that_it_said_nothing(tmp_path: Path, work: str, heard: str) -> None:
    assert _heard(tmp_path, work).startswith(heard)


def test_the_work_is_said_before_what_comes_after_it_which_may_end_the_child_without_a_word(tmp_path: Path) -> None:
    # As Ray may end the driver while it leaves the cluster (ray.shutdown), after the summary.
    assert _heard(tmp_path, "return 4", after="os._exit(1)") == "code 4"
    assert _heard(tmp_path, "return 0", after="raise KeyboardInterrupt") == "code 0"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_that_came_before_the_work_began_stops_it_and_is_said(tmp_path: Path, sig: str) -> None:
    # Sent to the parent (the process apart forwards from) as apart begins: held back, then forwarded.
    before = (
        f"import signal; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.{sig}]); os.kill(os.getpid(), signal.{sig})"
    )
    # The work lasts: a signal lost would let it end well, and one forwarded late must still find it.
    assert _heard(tmp_path, "time.sleep(20)", before=before) == "error 130 interrupted"


def test_ray_s_own_sigterm_handler_in_the_child_is_said_interrupted(tmp_path: Path) -> None:
    # ray.init makes SIGTERM call sys.exit: SystemExit is a stop, not a silence.
    assert _heard(tmp_path, "raise SystemExit(15)") == "error 130 interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_parent_stops_the_child_and_is_said(tmp_path: Path, sig: int) -> None:
    parent = _parent(tmp_path, "time.sleep(60)")
    wait_for(lambda: (tmp_path / "child").exists(), 30)
    parent.send_signal(sig)
    out, err = parent.communicate(timeout=30)
    assert out.strip() == "error 130 interrupted" and (tmp_path / "stopped").exists(), err


def test_a_child_whose_parent_was_killed_outright_stops(tmp_path: Path) -> None:
    parent = _parent(tmp_path, "time.sleep(60)")
    wait_for(lambda: (tmp_path / "child").exists(), 30)
    child = int((tmp_path / "child").read_text())
    parent.kill()
    parent.communicate(timeout=30)
    wait_for(lambda: (tmp_path / "stopped").exists(), 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")  # a zombie has ended: its parent (init here) reaps it


def test_a_child_that_cannot_leave_after_its_word_is_ended_and_its_word_kept(tmp_path: Path) -> None:
    # As ray.shutdown may hang on a cluster gone: nanocode never stays after its summary.
    started = time.monotonic()
    assert (
        _heard(
            tmp_path, "return 4", after="import signal; signal.pthread_sigmask(signal.SIG_BLOCK, [15]); time.sleep(600)"
        )
        == "code 4"
    )
    assert time.monotonic() - started < 30


ON_A_TERMINAL = """
import fcntl, pty, termios
os.setsid()
terminal, tty = pty.openpty()
fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
mode = termios.tcgetattr(tty)
mode[3] |= termios.TOSTOP  # `stty tostop`: a background process group that writes is stopped
termios.tcsetattr(tty, termios.TCSANOW, mode)
os.dup2(tty, 2)
"""


def test_the_child_writes_to_a_terminal_that_stops_background_writers(tmp_path: Path) -> None:
    # The child has a process group of its own, in the terminal's background: its progress lines go on.
    work = "print('progress', file=sys.stderr, flush=True)\nreturn 4"
    assert _heard(tmp_path, work, before=ON_A_TERMINAL) == "code 4"
