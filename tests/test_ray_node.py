"""What a Ray node keeps of its goals: a goal's results folder outlives no goal (held by a lock, swept
once no one holds it) and stays until each goal in it sent back what it did; a project's copy is
unpacked once per content hash and shared, and evicted once no goal holds it and it is old or one too
many."""

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOLD = """
import sys, time
from nanocode.batch.node import goal_folder
with goal_folder() as folder:
    print(folder, flush=True)
    time.sleep(600)
"""


HOLD_PROJECT = """
import sys, time
from nanocode.batch.projects import project_copy
with project_copy(sys.argv[1], open(sys.argv[2], "rb").read()) as folder:
    print(folder, flush=True)
    time.sleep(600)
"""


def _holder(script: str = HOLD, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """A goal that runs (a process holding its folder, or its project's copy), and that folder."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
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


def _packed(tmp_path: Path, content: str) -> tuple[str, bytes]:
    """A project holding `content`, packed as the submitting machine packs it: its hash and its tar."""
    from nanocode.workspace.remote import project_tar

    project = tmp_path / "projects" / hashlib.sha256(content.encode()).hexdigest()[:8]
    project.mkdir(parents=True)
    (project / "main.py").write_text(content)
    buffer = io.BytesIO()
    project_tar(str(project), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest(), buffer.getvalue()


def _copies() -> set[str]:
    from nanocode.batch.projects import root

    return {p.name for p in root().iterdir() if p.is_dir()}


def test_a_project_is_unpacked_once_per_content_hash_and_a_changed_one_gets_a_copy_of_its_own(tmp_path: Path) -> None:
    from nanocode.batch.projects import project_copy

    digest, data = _packed(tmp_path, "one")
    with project_copy(digest, data) as first, project_copy(digest, data) as second:  # two goals at once
        assert first == second and (first / "main.py").read_text() == "one"
        unpacked = first.stat().st_ino
    with project_copy(digest, data) as later:  # a later goal, or the next batch
        assert later.stat().st_ino == unpacked
    changed, data2 = _packed(tmp_path, "two")
    with project_copy(changed, data2) as other:
        assert (other / "main.py").read_text() == "two"
    assert _copies() == {digest, changed}
    wrong = changed[:-1] + ("0" if changed[-1] != "0" else "1")
    with pytest.raises(ValueError, match="content hash"), project_copy(wrong, data2):
        pass
    assert _copies() == {digest, changed}  # a tar that is not what its hash says is never unpacked


def test_copies_beyond_the_newest_or_unused_for_days_go_unless_a_goal_holds_them(tmp_path: Path) -> None:
    from nanocode.batch import projects

    made = [_packed(tmp_path, f"version {n}") for n in range(projects.KEEP + 2)]
    tar = tmp_path / "held.tar"
    tar.write_bytes(made[0][1])
    held, _ = _holder(HOLD_PROJECT, made[0][0], str(tar))  # a goal still running, on the least recently used
    try:
        os.utime(projects.root() / f"{made[0][0]}.lock", (0.0, time.time() - 1000))
        for n, (digest, data) in enumerate(made[1:], start=1):
            with projects.project_copy(digest, data):
                os.utime(projects.root() / f"{digest}.lock", (1000.0 + n, time.time() - 100 + n))
        # The newest KEEP stay, and the held one; the one beyond them that no goal holds went.
        assert _copies() == {made[0][0], *(d for d, _ in made[-projects.KEEP :])}
        old = made[-1][0]
        os.utime(projects.root() / f"{old}.lock", (0.0, time.time() - (projects.DAYS + 1) * 86400))
        assert projects.evict() == [old]  # unused for too long, however few copies there are
    finally:
        held.kill()
        held.wait(timeout=10)
    assert made[0][0] in projects.evict(now=time.time() + (projects.DAYS + 1) * 86400)
    assert not _copies() and not list(projects.root().iterdir())  # nothing half-removed, no lock file left


TAKE = st.tuples(st.just("take"), st.integers(0, 6))  # a goal of project N starts, holding its copy
OPS = st.lists(
    st.one_of(
        TAKE,
        TAKE,
        st.tuples(st.just("end"), st.integers(0, 3)),  # the Nth goal still running ends
        st.tuples(st.just("age"), st.integers(0, 6), st.floats(0, 20)),  # project N last used days ago
    ),
    min_size=6,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_no_goal_ever_sees_its_copy_go_and_the_node_keeps_only_what_it_should(tmp_path: Path, ops: list[Any]) -> None:
    """Whatever goals start and end, and however old the copies: a copy a goal holds is there, whole;
    after a goal starts, the copies no goal holds are among the newest KEEP and none older than DAYS."""
    from nanocode.batch import projects

    made = _made(tmp_path)
    shutil.rmtree(projects.root(), ignore_errors=True)
    with contextlib.ExitStack() as stack:
        running: list[tuple[int, contextlib.ExitStack]] = []
        for op in ops:
            if op[0] == "take":
                goal = stack.enter_context(contextlib.ExitStack())
                goal.enter_context(projects.project_copy(*made[op[1]]))
                running.append((op[1], goal))
                unheld = _copies() - {made[n][0] for n, _ in running}
                ranked = sorted(projects.root().glob("*.lock"), key=lambda p: p.stat().st_mtime, reverse=True)
                newest = {p.stem for p in ranked[: projects.KEEP]}
                assert unheld <= newest
                assert all(
                    time.time() - (projects.root() / f"{d}.lock").stat().st_mtime <= projects.DAYS * 86400
                    for d in unheld
                )
            elif op[0] == "end" and op[1] < len(running):
                running.pop(op[1])[1].close()
            elif op[0] == "age" and (projects.root() / f"{made[op[1]][0]}.lock").exists():
                os.utime(projects.root() / f"{made[op[1]][0]}.lock", (0.0, time.time() - op[2] * 86400))
            for n, _ in running:
                assert (projects.root() / made[n][0] / "main.py").read_text() == f"version {n}"
    assert not list(projects.root().glob(".*"))  # nothing half-unpacked or half-removed


_MADE: dict[str, list[tuple[str, bytes]]] = {}


def _made(tmp_path: Path) -> list[tuple[str, bytes]]:
    """Seven versions of a project, packed once for all the examples."""
    if "made" not in _MADE:
        _MADE["made"] = [_packed(tmp_path, f"version {n}") for n in range(7)]
    return _MADE["made"]


FOLDER_OPS = st.lists(
    st.one_of(
        st.just(("arrive",)),  # a goal is given to the node
        st.tuples(st.just("send"), st.integers(0, 3)),  # the Nth goal still running packs what it did
        st.just(("close",)),  # the actor is stopped, or the batch ends
    ),
    max_size=20,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=FOLDER_OPS)
def test_a_goal_always_sends_back_what_it_did_however_the_close_falls(ops: list[Any]) -> None:
    """Whenever the actor closes: a goal that started finds its results where it made them when it
    packs them; no goal starts after the close; once closed and no goal runs, no folder is left."""
    from nanocode.batch.node import Folder
    from nanocode.workspace import paths

    folder = Folder()
    running: list[tuple[contextlib.ExitStack, Path]] = []
    closed = False
    for n, op in enumerate([*ops, ("close",)]):
        if op[0] == "arrive":
            goal = contextlib.ExitStack()
            if goal.enter_context(folder.entered()):
                assert not closed
                (folder.path / f"g{n}").mkdir()
                (folder.path / f"g{n}" / "transcript.jsonl").write_text("{}\n")
                running.append((goal, folder.path / f"g{n}"))
            else:
                assert closed
                goal.close()
        elif op[0] == "send" and op[1] < len(running):
            goal, made = running.pop(op[1])
            assert (made / "transcript.jsonl").read_text() == "{}\n"
            goal.close()
        elif op[0] == "close":
            folder.close()
            closed = True
        assert folder.path.is_dir() == (not closed or bool(running))
    for goal, made in running:
        assert (made / "transcript.jsonl").is_file()
        goal.close()
    assert not folder.path.exists() and not list((paths.state() / "ray-goals").iterdir())
