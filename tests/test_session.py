"""The session's own rules: what needs the sandbox, what resume can pick up, notes of a sandbox started
ahead, signals that come while a goal cleans up."""

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nanocode.cli import cli
from nanocode.errors import ConfigError
from nanocode.interfaces import CommandResult
from nanocode.repl import Ahead
from nanocode.resume import find
from nanocode.sandbox.engine import Facts, check_runtime
from nanocode.signals import Signals, Terminated


@pytest.mark.parametrize(
    "args", [["--runtime", "runsc"], ["--require-isolation", "gvisor"], ["--require-limits"]], ids=str
)
def test_what_holds_the_sandbox_needs_the_sandbox(project: Path, args: list[str]) -> None:
    # Without --sandbox the goal's commands would run on the host, isolated by nothing: refused before anything runs.
    result = CliRunner().invoke(
        cli, ["-p", "g", "--project", str(project), *args], env={"OPENROUTER_API_KEY": "sk-test"}
    )
    assert result.exit_code == 3, result.stderr
    assert "add --sandbox" in result.stderr and result.stderr.count("\n") == 1
    assert not list(project.iterdir())


def test_resume_cannot_carry_an_overlay_layer(project: Path, tmp_path: Path) -> None:
    transcript = tmp_path / "run.jsonl"
    transcript.write_text(json.dumps({"kind": "start", "project": str(project)}) + "\n")
    result = CliRunner().invoke(
        cli,
        ["--resume", str(transcript), "--sandbox", "--workspace", "overlay", "--project", str(project)],
        env={"OPENROUTER_API_KEY": "sk-test"},
    )
    assert result.exit_code == 3
    assert "change set" in result.stderr and "--workspace bind" in result.stderr


def test_resume_last_passes_over_runs_that_wrote_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "state" / "nanocode" / "runs"
    runs.mkdir(parents=True)
    (runs / "a.jsonl").write_text('{"kind": "start"}\n')
    empty = runs / "b.jsonl"
    empty.write_text("")
    later = time.time() + 10
    os.utime(empty, (later, later))  # the newest, as after a start that failed
    assert find("last") == runs / "a.jsonl"


def test_a_runtime_registered_without_a_network_refuses_one() -> None:
    facts = Facts("Docker 20.10", False, {"runsc": "/usr/bin/runsc", "runc": "runc"}, "runc", [], "v1 cgroupfs")
    facts.runtime_args = {"runsc": ["--network=none", "--host-uds=all"]}
    check_runtime(facts, "runsc")
    check_runtime(facts, "runc", networked=True)
    with pytest.raises(ConfigError, match="--network=none"):
        check_runtime(facts, "runsc", networked=True)


class _Executor:
    def __init__(self, note: Any):
        self.note = note

    def run(self, command: str, timeout: float, watch: Any = None) -> CommandResult:
        return CommandResult("", "", 0)

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        return ""

    def write_file(self, path: str, content: str) -> None:
        pass

    def close(self) -> None:
        self.note("said at close")


def test_a_sandbox_started_ahead_speaks_to_the_person_for_as_long_as_it_lives() -> None:
    def prepare(note: Any) -> tuple[Any, Any]:
        note("said while the person typed")
        return None, _Executor(note)

    ahead = Ahead(prepare)
    said: list[str] = []
    _, executor = ahead.take(said.append)
    executor.close()
    assert said == ["said while the person typed", "said at close"]


def test_a_sigterm_while_a_finished_goal_cleans_up_still_ends_nanocode() -> None:
    signals = Signals()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), signals.goal():
        signals.hold()  # as run_goal does before its clean-up
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    signals.exiting()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    signal.signal(signal.SIGTERM, before)
