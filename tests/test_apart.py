"""nanocode.batch.apart: work in a child process, and what the parent hears of how it ended. Each case
runs a parent of its own (a subprocess), so that the signals sent stay between it and its child."""

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

def work():
    (folder / "child").write_text(str(os.getpid()))
    try:
{work}
    except KeyboardInterrupt:
        (folder / "stopped").write_text("")
        raise

try:
    print("code", apart(work))
except Exception as exc:
    print("error", exc.exit_code, exc.format_message())
"""


def _parent(tmp_path: Path, work: str) -> subprocess.Popen[str]:
    script = PARENT.format(work=textwrap.indent(textwrap.dedent(work), " " * 8))
    command = [sys.executable, "-c", script, str(tmp_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _heard(tmp_path: Path, work: str) -> str:
    parent = _parent(tmp_path, work)
    out, err = parent.communicate(timeout=60)
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
