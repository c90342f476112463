"""The runtime's shells forked ahead (nanocode/runtime/server.py): a shell's script has its end given
only once the shell holds the script on an fd of its own. Given before, the shell's `. /dev/fd/3`
opens a named pipe with no writer left, waits for one for good, and its command hangs."""

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

CHURN = """
import os
while True:
    for fd in [os.open("/dev/null", os.O_RDONLY) for _ in range(8)]:
        os.close(fd)
"""


@contextlib.contextmanager
def _forked() -> Iterator[Any]:
    """A forked shell's pipes, in a folder of their own; its pid is the test's to give."""
    from nanocode.runtime.server import ForkedShell

    with tempfile.TemporaryDirectory() as folder:
        made = ForkedShell(1, folder)
        try:
            yield made
        finally:
            made.close()


@pytest.fixture
def shell() -> Iterator[Any]:
    with _forked() as made:
        yield made


def _holding(script: str, fds: dict[int, bool]) -> subprocess.Popen[str]:
    """A process holding, on each fd given, the script's named pipe (True) or /dev/null."""
    opened = " ".join(f'{fd}<"{script if held else "/dev/null"}"' for fd, held in fds.items())
    command = f"exec {opened}; echo ready; exec sleep 60" if fds else "echo ready; exec sleep 60"
    process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


@settings(max_examples=25, deadline=None)
@given(fds=st.dictionaries(st.integers(3, 12), st.booleans(), max_size=5))
def test_a_shell_is_sourcing_exactly_when_it_holds_its_script_on_an_fd_other_than_3(fds: dict[int, bool]) -> None:
    with _forked() as shell:
        process = _holding(shell.paths[2], fds)
        try:
            shell.pid = process.pid
            assert shell.sourcing() == any(held and fd != 3 for fd, held in fds.items())
        finally:
            process.kill()
            process.wait()


def test_a_shell_that_opens_and_closes_other_fds_is_never_taken_for_sourcing(shell: Any) -> None:
    # As a shell's `exec 4>&-` may close an fd between the listing of its fds and the look at it.
    process = subprocess.Popen([sys.executable, "-c", CHURN])
    try:
        shell.pid = process.pid
        assert not any(shell.sourcing() for _ in range(2000))
    finally:
        process.kill()
        process.wait()


def test_a_shell_that_is_gone_waits_for_nothing(shell: Any) -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    shell.pid = process.pid
    assert shell.sourcing()
