"""Resume: a run stopped by kill -9, a budget or a cut transcript carries on from its transcript."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nanocode.cli import cli
from nanocode.prompts import MARKER
from nanocode.resume import rebuild
from tests.scripted_api import ScriptedAPI, call, error, message, tools
from tests.test_cli import _env, _nanocode, _running
from tests.test_context import assert_valid, big_steps, records


def _pids(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"^{marker}"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


@pytest.mark.parametrize("sandbox", [False, True], ids=["host", "sandbox"])
def test_resume_after_kill_9_mid_command_completes_the_goal(
    api: ScriptedAPI, project: Path, tmp_path: Path, request: pytest.FixtureRequest, sandbox: bool
) -> None:
    if sandbox:
        request.getfixturevalue("sandbox_image")
        request.getfixturevalue("no_leftovers")
    marker = f"nanocode-resume-{time.monotonic_ns()}"
    api.add(
        tools(call("write_file", {"path": "a.txt", "content": "A"}, id="w")),
        tools(call("shell", {"command": f"bash -c 'exec -a {marker} sleep 300'"}, id="long")),
    )
    env = _env(tmp_path, INFERENCE_BASE_URL=api.url, MODEL_NAME="scripted", NANOCODE_SANDBOX="1" if sandbox else "0")
    goal = "write a.txt and b.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "nanocode", "-p", goal, "--project", str(project)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _running(marker):
            time.sleep(0.05)
        assert _running(marker)
        process.kill()
        process.wait(10)
    finally:
        for pid in _pids(marker):  # what the killed run left running, if anything
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    [transcript] = (tmp_path / "state" / "nanocode" / "runs").glob("*.jsonl")
    with transcript.open("a") as file:
        file.write('{"kind": "tool", "id": "long", "res')  # the run was cut mid-line
    seen = api.requests[-1]["messages"]

    api.add(tools(call("write_file", {"path": "b.txt", "content": "B"})), message(f"{MARKER} both written"))
    done = _nanocode("--resume", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "both written\n"
    assert "1 damaged lines skipped" in done.stderr
    assert (project / "a.txt").read_text() == "A" and (project / "b.txt").read_text() == "B"
    resumed = api.requests[2]["messages"]
    assert resumed[: len(seen)] == seen  # the conversation as the model saw it
    assert resumed[len(seen)]["tool_calls"][0]["id"] == "long"
    assert resumed[len(seen) + 1] == {
        "role": "tool",
        "tool_call_id": "long",
        "content": "ERROR: not run: nanocode stopped",
    }
    assert resumed[len(seen) + 2]["role"] == "user" and "stopped in the middle of this goal" in resumed[-1]["content"]
    assert goal in resumed[-1]["content"]
    assert_valid(api.requests[2], goal)
    # The same transcript goes on; its last goal is now complete and cannot be resumed again.
    entries = [json.loads(line) for line in transcript.read_text().splitlines() if not line.startswith('{"kind"')]
    assert [e["kind"] for e in entries if e["kind"] in ("start", "end")] == ["start", "start", "end"]
    assert entries[-1]["outcome"] == "complete"
    again = _nanocode("--resume", str(transcript), env=env)
    assert again.returncode == 3
    assert again.stderr.strip().count("\n") == 0 and "is complete" in again.stderr


def test_resume_after_a_budget_rebuilds_the_compacted_conversation_exactly(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.context_limit = 8000
    api.summary = "Printed lines of x."
    api.add(*big_steps(12, 6000))
    transcript = tmp_path / "run.jsonl"
    env = {"OPENROUTER_API_KEY": "k", "INFERENCE_BASE_URL": api.url, "MODEL_NAME": "scripted"}
    common = ["--project", str(project), "--context-window", "8000"]
    runner = CliRunner()
    stopped = runner.invoke(
        cli, ["-p", "print", *common, "--transcript", str(transcript), "--max-steps", "10"], env=env
    )
    assert stopped.exit_code == 5, stopped.stderr
    assert any(e["kind"] == "compact" for e in records(transcript))
    last = [r for r in api.requests if "tools" in r][-1]["messages"]
    rebuilt = rebuild(transcript).messages
    assert rebuilt[: len(last)] == last
    assert [m["role"] for m in rebuilt[len(last) :]] == ["assistant", "tool"]

    api.add(message(f"{MARKER} printed"))
    before = len(api.requests)
    resumed = runner.invoke(cli, ["--resume", str(transcript), *common, "--max-steps", "5"], env=env)
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout == "printed\n"
    first = next(r for r in api.requests[before:] if "tools" in r)
    assert "stopped in the middle of this goal" in first["messages"][-1]["content"]
    for request in api.requests[before:]:
        if "tools" in request:
            assert_valid(request, "print")


def test_resume_refuses_what_it_cannot_continue(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    env = _env(tmp_path, INFERENCE_BASE_URL=api.url)
    nothing = _nanocode("--resume", "--project", str(project), env=env)
    assert nothing.returncode == 3 and "no run to resume" in nothing.stderr
    (tmp_path / "junk.jsonl").write_text("not json\n")
    junk = _nanocode("--resume", str(tmp_path / "junk.jsonl"), env=env)
    assert junk.returncode == 3 and "cannot be resumed" in junk.stderr
    both = _nanocode("--resume", "-p", "g", env=env)
    assert both.returncode == 3 and "give no -p" in both.stderr
    for result in (nothing, junk, both):
        assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


def test_resume_continues_the_last_goal_of_a_repl_run_without_a_refused_one(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add(
        message(f"{MARKER} one done"),
        error(400, "refused for a reason of its own"),
        tools(call("shell", {"command": "echo three"}, id="t3")),
    )
    env = _env(tmp_path, INFERENCE_BASE_URL=api.url, MODEL_NAME="scripted")
    run = _nanocode("--project", str(project), "--max-steps", "1", input="one\ntwo\nthree\n\n", env=env)
    assert run.returncode == 0, run.stderr
    assert "400" in run.stderr and "1 model calls" in run.stderr
    seen = api.requests[-1]["messages"]
    assert [m["content"] for m in seen[1:]] == ["one", f"{MARKER} one done", "three"]

    api.add(message(f"{MARKER} three done"))
    done = _nanocode("--resume", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "three done\n"
    resumed = api.requests[-1]["messages"]
    assert resumed[: len(seen)] == seen
    assert resumed[len(seen) + 1] == {"role": "tool", "tool_call_id": "t3", "content": "three\n"}
    assert "stopped in the middle of this goal" in resumed[-1]["content"] and len(resumed) == len(seen) + 3
