"""The REPL asks about a change set before it says kept; `batch apply` with nothing to apply says so."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.test_batch import SMALL, batch, goal_args
from tests.workspace_support import env

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
QUESTION = "apply / discard / keep? [a/d/K]"
KEPT = re.compile(r"\bkept\b")


def _goal(api: ScriptedAPI, command: str, said: str) -> None:
    api.add(tools(call("shell", {"command": command})), message(f"{MARKER} {said}"))


def test_the_repl_says_kept_only_after_the_person_answered(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    _goal(api, "echo 1 > one", "one")
    _goal(api, "echo 2 > two", "two")
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "--sandbox", "--workspace", "overlay", "--project", str(project)],
        input="first\n\nsecond\na\n\n",  # an empty answer keeps; then apply
        env=env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    before, first, second = done.stderr.split(QUESTION)
    assert "1 file changed" in before and not KEPT.search(before)  # the summary, then the question
    assert "kept: nanocode diff" in first.splitlines()[0] and not KEPT.search(first.split("> ", 1)[1])
    assert "applied change set" in second and not KEPT.search(second)
    assert sorted(p.name for p in project.iterdir()) == ["two"]


def test_batch_apply_with_nothing_to_apply_says_so(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add_goal("change", tools(call("write_file", {"path": "a.txt", "content": "A\n"})), message(f"{MARKER} a"))
    api.add_goal("look", tools(call("shell", {"command": "ls"})), message(f"{MARKER} looked"))
    out = tmp_path / "out"
    entries = [{"id": "change", "goal": "change"}, {"id": "look", "goal": "look"}]
    ran = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "2", *SMALL))
    assert ran.returncode == 0, ran.stderr

    def nothing(*args: str, code: int, why: str) -> None:
        done = batch(tmp_path, api, "apply", str(out), *args)
        assert done.returncode == code, done.stderr
        assert done.stderr == f"nanocode: nothing to apply in {out}: {why}\n"

    nothing("--only", "look", code=3, why="1 changed nothing")
    assert not (project / "a.txt").exists()
    applied = batch(tmp_path, api, "apply", str(out))
    assert applied.returncode == 0 and (project / "a.txt").read_text() == "A\n"
    nothing(code=6, why="1 applied already, 1 changed nothing")  # as `nanocode apply` of one applied already
