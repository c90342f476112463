"""A bind-mode goal holds its project alone: a second bind goal there, by whatever spelling, fails at
once; an overlay goal does not wait; a nanocode killed with kill -9 holds nothing, and the next start
ends its goal as the goal's end would have, its warning about flagged changes included."""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanocode.prompts import MARKER
from nanocode.sandbox.container import ours
from nanocode.workspace import lease
from nanocode.workspace.lease import ProjectBusy
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import env, nanocode, repo, workspace_options


def _spellings(tmp: Path, project: Path, hops: list[str]) -> str:
    """A spelling of `project`: each hop a symlink to the last, a `x/..` detour, a `./`, a trailing `/`."""
    path = str(project)
    for i, hop in enumerate(hops):
        if hop == "link":
            link = tmp / f"link{i}"
            os.symlink(path, link)
            path = str(link)
        elif hop == "detour":
            path = os.path.join(path, "sub", "..")
        elif hop == "dot":
            path = os.path.join(path, ".")
        else:
            path += "/"
    return path


@given(st.lists(st.sampled_from(["link", "detour", "dot", "slash"]), max_size=4))
def test_any_spelling_of_a_held_project_is_refused_and_another_project_is_not(hops: list[str]) -> None:
    """The invariant: one lease per folder at a time, whatever name reached it."""
    with tempfile.TemporaryDirectory() as folder:  # one per case: hypothesis runs many in one test
        tmp = Path(folder)
        (tmp / "p" / "sub").mkdir(parents=True)
        (tmp / "q").mkdir()
        held = lease.hold(str(tmp / "p"))
        try:
            with pytest.raises(ProjectBusy) as caught:
                lease.hold(_spellings(tmp, tmp / "p", hops))
            assert caught.value.exit_code == 3 and "--workspace overlay" in caught.value.format_message()
            lease.hold(str(tmp / "q")).release()  # another folder: its own lease
        finally:
            held.release()
        lease.hold(_spellings(tmp, tmp / "p", [])).release()  # let go: the next takes it


@pytest.fixture
def holder(api: ScriptedAPI, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A bind goal running in a project (its command sleeps), as its own nanocode process."""
    project = repo(tmp_path / "p", {"a.txt": "a\n", "tox.ini": "[tox]\n"})
    script = "echo x > Makefile && rm tox.ini && echo b > a.txt && touch started && sleep 300"
    api.add_goal("hold", tools(call("shell", {"command": script})))
    command = [sys.executable, "-m", "nanocode", *workspace_options("bind"), "-p", "hold", "--project", str(project)]
    process = subprocess.Popen(command, env=env(tmp_path, api), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (project / "started").exists():
            assert time.monotonic() < deadline and process.poll() is None, "the goal did not start"
            time.sleep(0.2)
        yield project, process
    finally:
        process.kill()
        process.wait()


def _goal(tmp_path: Path, api: ScriptedAPI, mode: str, project: str, text: str) -> subprocess.CompletedProcess[str]:
    api.add_goal(text, tools(call("shell", {"command": f"echo {text} > {text}.txt"})), message(f"{MARKER} done"))
    return nanocode(tmp_path, api, *workspace_options(mode), "-p", text, "--project", project)


@pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")
def test_a_second_bind_goal_fails_at_once_overlay_runs_and_a_killed_holder_frees_the_project(
    api: ScriptedAPI, tmp_path: Path, holder: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    project, process = holder
    os.symlink(project, tmp_path / "spelled")
    for spelling in (str(project), str(tmp_path / "spelled")):
        busy = _goal(tmp_path, api, "bind", spelling, "second")
        assert busy.returncode == 3, busy.stderr
        (line,) = busy.stderr.strip().splitlines()
        assert str(project) in line or spelling in line
        assert "another bind-mode goal" in line and "--workspace overlay" in line
        assert not (project / "second.txt").exists()
    overlay = _goal(tmp_path, api, "overlay", str(project), "third")
    assert overlay.returncode == 0, overlay.stderr
    process.kill()  # SIGKILL: nothing of nanocode runs after it, and its lease goes with it
    process.wait()
    api.goals.pop("second")
    freed = _goal(tmp_path, api, "bind", str(tmp_path / "spelled"), "second")
    assert freed.returncode == 0, freed.stderr
    assert (project / "second.txt").read_text() == "second\n"


def _stopped(docker_engine: Any, project: Path) -> bool:
    """The killed goal's sandbox has ended (its engine saw the connection go): its goal is over."""
    mine = [c for c in ours(docker_engine) if c.labels.get("nanocode.project") == str(project)]
    return not [c for c in mine if c.status in ("running", "created", "restarting")]


@pytest.mark.parametrize("journal", ["whole", "older"])
@pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")
def test_the_next_start_warns_of_a_killed_bind_goals_flagged_changes(
    api: ScriptedAPI, tmp_path: Path, holder: tuple[Path, subprocess.Popen[bytes]], docker_engine: Any, journal: str
) -> None:
    """`older`: a journal without the flagged names of the goal's start (an older nanocode's): what
    went cannot be told, and the warning says so in one line."""
    project, process = holder
    process.kill()
    process.wait()
    deadline = time.monotonic() + 60
    while not _stopped(docker_engine, project):
        assert time.monotonic() < deadline, "the killed goal's sandbox still runs"
        time.sleep(0.2)
    if journal == "older":
        (entry,) = (tmp_path / "state" / "nanocode" / "journal").glob("*.json")
        entry.write_text(json.dumps({k: v for k, v in json.loads(entry.read_text()).items() if k != "flagged"}))
    done = _goal(tmp_path, api, "bind", str(project), "next")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "host tools run by themselves" in line]
    if journal == "whole":
        assert warned == [
            f"warning: a killed goal in {project} changed what host tools run by themselves: Makefile, tox.ini"
            "  [runs on the host: review]"
        ]
    else:
        assert len(warned) == 1 and "could not be checked" in warned[0] and str(project) in warned[0], warned
    assert not list((tmp_path / "state" / "nanocode" / "journal").glob("*.json"))


@pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes", "sandbox_image")
def test_a_repl_in_a_busy_project_says_so_for_the_goal_and_goes_on(
    api: ScriptedAPI, tmp_path: Path, holder: tuple[Path, subprocess.Popen[bytes]], docker_engine: Any
) -> None:
    project, process = holder
    command = [sys.executable, "-m", "nanocode", *workspace_options("bind"), "--project", str(project)]
    environment = env(tmp_path, api)
    repl = subprocess.run(command, env=environment, input="busy\n\n", capture_output=True, text=True, timeout=120)
    assert repl.returncode == 0, repl.stderr  # the session lived on to the empty line that ends it
    assert repl.stderr.count("another bind-mode goal") == 1 and "Traceback" not in repl.stderr, repl.stderr
    assert not (project / "busy.txt").exists()
    process.kill()  # and what the holder's sandbox left goes, as at any next start
    process.wait()
    deadline = time.monotonic() + 60
    while not _stopped(docker_engine, project) and time.monotonic() < deadline:
        time.sleep(0.2)
    prune = [sys.executable, "-m", "nanocode", "sandbox", "prune"]
    subprocess.run(prune, env=environment, capture_output=True, timeout=120, check=True)
