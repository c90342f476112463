"""A goal's results folder on a Ray node outlives no goal: held by a lock, swept once no one holds it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HOLD = """
import sys, time
from nanocode.batch.node import goal_folder
with goal_folder() as folder:
    print(folder, flush=True)
    time.sleep(600)
"""


def _holder() -> tuple[subprocess.Popen[str], Path]:
    """A goal that runs (a process holding its folder), and its folder."""
    process = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_goals_folder_goes_with_the_next_goal_and_a_running_ones_stays(tmp_path: Path) -> None:
    from nanocode.batch.node import goal_folder

    killed, gone = _holder()
    running, kept = _holder()
    try:
        (gone / "k0").mkdir()
        os.kill(killed.pid, signal.SIGKILL)  # as a node's death or a forced cancel would
        killed.wait(timeout=10)
        assert gone.is_dir()
        with goal_folder() as mine:
            assert not gone.exists() and kept.is_dir() and mine.is_dir()
        assert not mine.exists() and kept.is_dir()
    finally:
        running.kill()
        running.wait(timeout=10)
    deadline = time.monotonic() + 5
    while kept.exists() and time.monotonic() < deadline:
        with goal_folder():
            pass
    assert not kept.exists()
    assert str(tmp_path / "state") in str(kept)  # the node's state folder, never the host's /tmp
