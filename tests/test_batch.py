"""`nanocode batch`: many goals in parallel, each in a sandbox and a workspace of its own, against the real
engine and a scripted endpoint that answers each goal by its own script."""

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, error, message, tools

SMALL = ["--memory", "256m", "--cpus", "0.25"]  # room for many sandboxes at once on a small machine


def _env(tmp_path: Path, api: ScriptedAPI) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE", "MODEL"))}
    if os.environ.get("NANOCODE_REQUIRE_DOCKER"):
        keep["NANOCODE_REQUIRE_DOCKER"] = os.environ["NANOCODE_REQUIRE_DOCKER"]
    return keep | {
        "OPENROUTER_API_KEY": "sk-test",
        "INFERENCE_BASE_URL": api.url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nanocode", "batch", *args]


def batch(tmp_path: Path, api: ScriptedAPI, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), env=_env(tmp_path, api), capture_output=True, text=True, timeout=timeout)


def start(tmp_path: Path, api: ScriptedAPI, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command(*args), env=_env(tmp_path, api), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@contextlib.contextmanager
def running(tmp_path: Path, api: ScriptedAPI, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A batch started in the background, killed if the test ends before it does."""
    process = start(tmp_path, api, *args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def goals_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "goals.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def goal_args(tmp_path: Path, entries: list[dict[str, Any]], out: Path, project: Path, *more: str) -> list[str]:
    """A batch of these goals, its results under `out`, in `project`; `more` says what else differs."""
    return [str(goals_file(tmp_path, entries)), "--out", str(out), "--project", str(project), *more]


def result(out: Path, goal_id: str) -> dict[str, Any]:
    return json.loads((out / goal_id / "result.json").read_text())


def tool_results(out: Path, goal_id: str) -> list[str]:
    lines = (out / goal_id / "transcript.jsonl").read_text().splitlines()
    return [e["result"] for e in map(json.loads, lines) if e["kind"] == "tool"]


def owned_by(client: Any, pid: int) -> list[Any]:
    from nanocode.sandbox.container import ours

    return [c for c in ours(client) if c.labels.get("nanocode.owner.pid") == str(pid)]


def volumes_of(client: Any, pid: int) -> list[Any]:
    return client.volumes.list(filters={"label": f"nanocode.owner.pid={pid}"})  # type: ignore[no-any-return]


def wait_for(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _in_flight(api: ScriptedAPI) -> set[str]:
    """The goals that have asked the model something and still have replies to come."""
    return {goal for _, goal in list(api.times) if api.goals.get(goal)}


def _all_running(client: Any, pid: int, count: int) -> bool:
    statuses = [c.status for c in owned_by(client, pid)]
    return len(statuses) == count and set(statuses) == {"running"}


def slow_goal(api: ScriptedAPI, text: str, steps: int, delay: float) -> None:
    """A goal that writes its own file, then runs `true` for a while before it completes."""
    name = text.replace(" ", "-")
    api.add_goal(text, tools(call("write_file", {"path": f"{name}.txt", "content": text})))
    for step in range(steps):  # each call its own, or the loop breaker would end the goal
        api.add_goal(text, Reply(tools(call("shell", {"command": f"true {step}"})).body, delay=delay))
    api.add_goal(text, message(f"{MARKER} {text} done", cost=0.001))


# Sandboxed batches.


def test_twelve_goals_over_four_workers_each_with_its_own_change_set(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    (project / "shared.txt").write_text("as it was\n")
    api.goal_delay = 0.05
    entries = []
    for n in range(12):
        text = f"goal number {n}"
        api.add_goal(
            text,
            tools(
                call("write_file", {"path": f"own-{n}.txt", "content": f"{n}\n"}),
                call("write_file", {"path": "shared.txt", "content": f"written by {n}\n"}),
            ),
            tools(call("shell", {"command": "ls; cat shared.txt"})),
            message(f"{MARKER} {n} done", cost=0.01),
        )
        entries.append({"id": f"g{n:02d}", "goal": text})
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "4", *SMALL))
    assert done.returncode == 0, done.stderr
    assert "4 workers on default" in done.stderr
    assert all(f"[g{n:02d}] preparing" in done.stderr for n in range(12))  # each goal's states, a line each
    assert sorted(p.name for p in project.iterdir()) == ["shared.txt"]  # untouched until applied
    for n in range(12):
        r = result(out, f"g{n:02d}")
        assert (r["outcome"], r["steps"], r["cost"]) == ("complete", 3, 0.01)
        assert sorted(r["files_changed"]) == [f"own-{n}.txt", "shared.txt"]
        # It saw its own files and nothing of the other goals'.
        assert tool_results(out, f"g{n:02d}")[-1].split() == [f"own-{n}.txt", "shared.txt", "written", "by", str(n)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcomes"] == {"complete": 12} and summary["exit_code"] == 0
    assert "g11" in done.stdout and "complete" in done.stdout

    listing = batch(tmp_path, api, "ls", str(out))
    assert listing.returncode == 0 and listing.stdout.count("complete") == 12

    applied = batch(tmp_path, api, "apply", str(out), "--only", "g03")
    assert applied.returncode == 0, applied.stderr
    assert (project / "shared.txt").read_text() == "written by 3\n" and (project / "own-3.txt").exists()
    conflict = batch(tmp_path, api, "apply", str(out))
    assert conflict.returncode == 6
    assert "goal g00: nothing applied" in conflict.stderr and "shared.txt" in conflict.stderr
    assert conflict.stderr.strip().splitlines()[-1].startswith("nanocode: ")
    assert (project / "own-0.txt").exists() is False  # the goal that conflicts applied nothing


def test_an_out_of_memory_goal_is_its_own(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    hog = "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'"
    api.add_goal("eat memory", tools(call("shell", {"command": hog})), message(f"{MARKER} it died"))
    entries = [{"id": "hog", "goal": "eat memory", "memory": "64m"}]
    for n in range(2):
        api.add_goal(f"calm {n}", tools(call("shell", {"command": "echo calm"})), message(f"{MARKER} ok"))
        entries.append({"id": f"calm{n}", "goal": f"calm {n}"})
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "3", *SMALL))
    assert done.returncode == 0, done.stderr
    assert "out of memory (limit 64m)" in tool_results(out, "hog")[0]
    for n in range(2):
        assert tool_results(out, f"calm{n}") == ["calm\n"]
        assert result(out, f"calm{n}")["outcome"] == "complete"


def test_resume_after_kill_9_runs_only_what_was_left(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    entries = [{"id": f"k{n}", "goal": f"kill test {n}"} for n in range(5)]
    api.add_goal("kill test 0", message(f"{MARKER} quick"))
    for n in range(1, 5):
        slow_goal(api, f"kill test {n}", steps=30, delay=0.5)
    out = tmp_path / "out"
    args = goal_args(tmp_path, entries, out, project, "--workers", "2", *SMALL)
    with running(tmp_path, api, *args) as process:
        # Killed once every sandbox is up (two goals running, two warm): one killed between its create and
        # its start has no runtime to end it, and waits for START_GRACE (docs/engines.md).
        wait_for(lambda: (out / "k0" / "result.json").exists() and _all_running(docker_engine, process.pid, 4))
        process.kill()
        process.communicate()
    stale = owned_by(docker_engine, process.pid)
    assert stale and volumes_of(docker_engine, process.pid)  # what the goals in flight left
    # Their lease ends with their owner: they stop by themselves, and the next start removes them.
    wait_for(lambda: {c.status for c in owned_by(docker_engine, process.pid)} <= {"exited"}, 15)

    api.goals.clear()
    for n in range(1, 5):
        api.add_goal(f"kill test {n}", message(f"{MARKER} second run"))
    before = len(api.times)
    again = batch(tmp_path, api, *args)
    assert again.returncode == 0, again.stderr
    assert "1 done already" in again.stderr
    assert {goal for _, goal in api.times[before:]} == {f"kill test {n}" for n in range(1, 5)}
    assert result(out, "k0")["answer"] == "quick" and result(out, "k3")["answer"] == "second run"
    assert not owned_by(docker_engine, process.pid) and not volumes_of(docker_engine, process.pid)
    assert not list((tmp_path / "state" / "nanocode" / "layers").iterdir())
    for c in stale:
        assert not glob.glob(os.path.join(tempfile.gettempdir(), f"nanocode-{c.labels['nanocode.goal']}-*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_every_goal_and_leaves_nothing_behind(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path, sig: int
) -> None:
    entries = [{"id": f"i{n}", "goal": f"interrupt {n}"} for n in range(4)]
    api.add_goal("interrupt 0", message(f"{MARKER} finished first"))
    for n in range(1, 4):
        slow_goal(api, f"interrupt {n}", steps=30, delay=0.3)
    out = tmp_path / "out"
    with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "2", *SMALL)) as process:
        wait_for(lambda: (out / "i0" / "result.json").exists() and len(owned_by(docker_engine, process.pid)) >= 3)
        goals = [c.labels["nanocode.goal"] for c in owned_by(docker_engine, process.pid)]
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not owned_by(docker_engine, process.pid) and not volumes_of(docker_engine, process.pid)
    assert not list((tmp_path / "state" / "nanocode" / "layers").iterdir())
    for goal in goals:
        assert not glob.glob(os.path.join(tempfile.gettempdir(), f"nanocode-{goal}-*"))
    assert result(out, "i0")["outcome"] == "complete"  # what finished is kept
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


# Outcomes, budgets and the endpoint.


def test_retry_failed_reruns_endpoint_errors_only(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    api.add_goal("fails", error(401, "bad key"))
    api.add_goal("works", message(f"{MARKER} fine"))
    api.add_goal("over budget", *[tools(call("shell", {"command": "true"}))] * 2)
    entries = [
        {"id": "a", "goal": "fails"},
        {"id": "b", "goal": "works"},
        {"id": "c", "goal": "over budget", "max_steps": 2},
    ]
    out = tmp_path / "out"
    args = goal_args(tmp_path, entries, out, project, "--retries", "0")
    first = batch(tmp_path, api, *args)
    assert first.returncode == 4, first.stderr  # an endpoint error is worse than a budget
    assert [result(out, i)["outcome"] for i in "abc"] == ["endpoint", "complete", "budget"]
    assert "API key was refused" in result(out, "a")["reason"]

    before = len(api.times)
    again = batch(tmp_path, api, *args)
    assert again.returncode == 4 and len(api.times) == before  # final results are not run again

    api.add_goal("fails", message(f"{MARKER} fixed"))
    retried = batch(tmp_path, api, *args, "--retry-failed")
    assert retried.returncode == 5, retried.stderr  # the budget stays
    assert [goal for _, goal in api.times[before:]] == ["fails"]
    assert result(out, "a")["outcome"] == "complete"


def test_a_batch_budget_ends_running_goals_and_starts_no_more(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    entries = [{"id": f"b{n}", "goal": f"spend {n}"} for n in range(4)]
    for n in range(4):
        calls = [tools(call("shell", {"command": f"true {i}"}), cost=0.01) for i in range(50)]
        api.add_goal(f"spend {n}", *[Reply(reply.body, delay=0.05) for reply in calls])
    out = tmp_path / "out"
    args = goal_args(tmp_path, entries, out, project, "--workers", "2", "--batch-max-cost", "0.1", *SMALL)
    done = batch(tmp_path, api, *args)
    assert done.returncode == 5, done.stderr
    ran = [result(out, p.name) for p in sorted(out.iterdir()) if (p / "result.json").exists()]
    assert [r["outcome"] for r in ran] == ["stopped", "stopped"]  # two at a time: two ran, two never started
    assert all("--batch-max-cost" in r["reason"] for r in ran)
    assert 0.1 <= sum(r["cost"] for r in ran) < 0.2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcomes"] == {"stopped": 4}

    for n in range(4):
        api.goals[f"spend {n}"] = [message(f"{MARKER} done")]
    assert batch(tmp_path, api, *args).returncode == 0  # stopped goals run again


def test_a_429_slows_every_worker_together(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    api.add_goal("storm 0", error(429, "slow down", {"Retry-After": "1"}), message(f"{MARKER} 0"))
    for n in range(1, 4):
        api.add_goal(
            f"storm {n}", Reply(tools(call("shell", {"command": "true"})).body, delay=0.6), message(f"{MARKER} {n}")
        )
    entries = [{"id": f"s{n}", "goal": f"storm {n}"} for n in range(4)]
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "4", *SMALL))
    assert done.returncode == 0, done.stderr
    refused = next(t for t, goal in api.times if goal == "storm 0")
    seconds = [[t for t, goal in api.times if goal == f"storm {n}"] for n in range(1, 4)]
    # Each goal's second request waited for the back-off another goal was asked for.
    assert all(len(times) == 2 and times[1] >= refused + 0.95 for times in seconds), (refused, seconds)
    assert json.loads((out / "summary.json").read_text())["backoffs"] >= 1


def test_goals_in_yaml_from_stdin_with_overrides(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    api.add_goal("first", message(f"{MARKER} 1"))
    api.add_goal("second", message(f"{MARKER} 2"))
    text = f"goals:\n  - first\n  - goal: second\n    id: two\n    model: some/other-model\n    project: {other}\n"
    out = tmp_path / "out"
    done = subprocess.run(
        _command("-", "--out", str(out), "--project", str(project), "-q"),
        input=text,
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "two" in done.stdout  # -q: only the summary
    assert result(out, "001")["project"] == str(project)
    assert result(out, "two")["project"] == str(other)
    assert {r["model"] for r in api.requests} == {"anthropic/claude-sonnet-4-6", "some/other-model"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"goal": "a"}\n{"goal": \n', "line 2 is not JSON"),
        ('{"id": "x"}\n', "has no goal text"),
        ('{"goal": "a", "api_key": "k"}\n', "api_key cannot be set per goal"),
        ('{"goal": "a", "max_steps": "many"}\n', "entry 1"),
        ('{"goal": "a", "id": "../up"}\n', "must be letters"),
        ('{"goal": "a", "id": "x"}\n{"goal": "b", "id": "x"}\n', "more than one goal"),
        ("- goal: [unclosed\n", "neither JSON Lines nor YAML"),
        ('{"goal": "a", "memory": "lots"}\n', "goal 001: --memory 'lots' is not a size"),
    ],
)
def test_a_bad_goals_file_is_one_line(api: ScriptedAPI, project: Path, tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "goals.jsonl"
    path.write_text(text)
    done = batch(tmp_path, api, str(path), "--project", str(project))
    assert done.returncode == 3, done.stderr
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr


# More than one engine.


def test_goals_spread_over_two_engines_one_that_cannot_see_the_project(
    docker_engine: Any,
    sandbox_image: str,
    second_engine: Any,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    (project / "base.txt").write_text("shipped\n")
    entries = []
    for n in range(6):
        text = f"two engines {n}"
        api.add_goal(
            text,
            Reply(tools(call("shell", {"command": f"cat base.txt && echo {n} > own.txt"})).body, delay=0.3),
            message(f"{MARKER} {n}"),
        )
        entries.append({"id": f"e{n}", "goal": text})
    out = tmp_path / "out"
    main = "unix:///var/run/docker.sock"
    done = batch(
        tmp_path,
        api,
        *goal_args(
            tmp_path, entries, out, project, "--engine", f"{main}=2", "--engine", f"{second_engine.url}=2", *SMALL
        ),
    )
    assert done.returncode == 0, done.stderr
    assert f"2 workers on {second_engine.url}" in done.stderr
    ran = [result(out, f"e{n}") for n in range(6)]
    assert {r["engine"] for r in ran} == {main, second_engine.url}
    for n, r in enumerate(ran):
        assert r["outcome"] == "complete" and r["files_changed"] == ["own.txt"]
        assert tool_results(out, f"e{n}")[0] == "shipped\n"
    assert not second_engine.client.containers.list(all=True, filters={"label": "nanocode"})
    assert not second_engine.client.volumes.list(filters={"label": "nanocode"})


# The REPL's warm sandbox.


def test_the_repl_starts_the_next_goals_sandbox_while_the_person_types(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    api.add(tools(call("shell", {"command": "echo one"})), message(f"{MARKER} first"))
    api.add(tools(call("shell", {"command": "echo two"})), message(f"{MARKER} second"))
    process = subprocess.Popen(
        [sys.executable, "-m", "nanocode", "--sandbox", "--project", str(project)],
        env=_env(tmp_path, api),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout
    process.stdin.write("goal one\n")
    process.stdin.flush()
    assert process.stdout.readline() == "first\n"
    wait_for(lambda: [c.status for c in owned_by(docker_engine, process.pid)] == ["running"])
    waiting = owned_by(docker_engine, process.pid)[0]  # started before the next goal is typed
    stdout, stderr = process.communicate("goal two\n\n", timeout=60)
    assert process.returncode == 0, stderr
    assert stdout == "second\n"
    assert f"sandbox {waiting.name}," in stderr.split("→ shell")[1]  # the second goal ran in it
    assert not owned_by(docker_engine, process.pid)  # and the one started for a third goal is gone


def test_an_engine_that_stops_answering_ends_its_goals_and_the_batch_goes_on_elsewhere(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    from tests.second_engine import start_second_engine, stop_second_engine

    lost = start_second_engine(sandbox_image)
    try:
        entries = [{"id": f"d{n}", "goal": f"dying engine {n}"} for n in range(6)]
        for n in range(6):
            slow_goal(api, f"dying engine {n}", steps=8, delay=0.25)
        out = tmp_path / "out"
        main = "unix:///var/run/docker.sock"
        args = goal_args(tmp_path, entries, out, project, *SMALL)
        with running(tmp_path, api, *args, "--engine", f"{main}=2", "--engine", f"{lost.url}=2") as process:
            # The main engine runs two goals at a time: a third goal talking to the model is on the other
            # one. (Its containers alone are not enough: a goal whose sandbox is still starting goes back to
            # the queue.)
            wait_for(lambda: len(_in_flight(api)) >= 3)
            lost.process.terminate()  # dockerd stops its containers and exits: it answers no more
            _, stderr = process.communicate(timeout=180)
        assert process.returncode == 3, stderr
        assert f"the engine {lost.url} stopped answering" in stderr
        ran = [result(out, f"d{n}") for n in range(6)]
        dead = [r for r in ran if r["engine"] == lost.url]
        assert dead and all(r["outcome"] == "engine" for r in dead)
        assert all(r["outcome"] == "complete" and r["engine"] == main for r in ran if r not in dead)
        assert len(dead) < 6

        for r in dead:
            api.goals[r["goal"]] = [message(f"{MARKER} on the other engine")]
        again = batch(tmp_path, api, *args, "--retry-failed")
        assert again.returncode == 0, again.stderr
        assert all(result(out, r["id"])["outcome"] == "complete" for r in dead)
    finally:
        stop_second_engine(lost)


# What the review found.


def kinds(out: Path, goal_id: str) -> list[str]:
    lines = (out / goal_id / "transcript.jsonl").read_text().splitlines()
    return [json.loads(line)["kind"] for line in lines]


@pytest.mark.parametrize("pool", ["--pool", "--no-pool"])
def test_a_goals_transcript_keeps_what_its_sandbox_says(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
    pool: str,
) -> None:
    api.add_goal("say isolation", tools(call("shell", {"command": "true"})), message(f"{MARKER} ok"))
    out = tmp_path / "out"
    args = ["--goal", "say isolation", "--out", str(out), "--project", str(project), "--allow-host", "example.com"]
    done = batch(tmp_path, api, *args, pool, *SMALL)
    assert done.returncode == 0, done.stderr
    seen = kinds(out, "001")
    # The isolation found as the sandbox started, the allowlist's summary as it closed, after the goal's end.
    assert "isolation" in seen and seen[-1] == "network_summary", seen


def test_a_goal_whose_transcript_cannot_be_written_ends_with_its_own_result(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    api.add_goal("blocked", message(f"{MARKER} never"))
    api.add_goal("fine", message(f"{MARKER} fine"))
    out = tmp_path / "out"
    (out / "001" / "transcript.jsonl").mkdir(parents=True)  # a folder where the transcript goes
    done = batch(tmp_path, api, "--goal", "blocked", "--goal", "fine", "--out", str(out), "--project", str(project))
    assert done.returncode == 3, done.stderr
    assert result(out, "001")["outcome"] == "config"
    assert "cannot write the transcript" in result(out, "001")["reason"]
    assert result(out, "002")["outcome"] == "complete"
    assert json.loads((out / "summary.json").read_text())["outcomes"] == {"config": 1, "complete": 1}
    assert "Traceback" not in done.stderr


def test_resume_is_refused_and_its_variable_ignored(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
    no_leftover_volumes: None,
) -> None:
    refused = batch(tmp_path, api, "--goal", "x", "--resume", "last", "--project", str(project))
    assert refused.returncode == 2 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = tmp_path / "old.jsonl"
    start_record = {"kind": "start", "project": str(elsewhere), "model": "m", "sandbox": True, "system": "s"}
    old.write_text(json.dumps(start_record) + "\n" + json.dumps({"kind": "goal", "goal": "an old goal"}) + "\n")
    api.add_goal("a new goal", message(f"{MARKER} new"))
    out = tmp_path / "out"
    done = subprocess.run(  # the project: the current folder, not the one of the run NANOCODE_RESUME names
        _command("--goal", "a new goal", "--out", str(out)),
        env=_env(tmp_path, api) | {"NANOCODE_RESUME": str(old)},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert result(out, "001")["project"] == str(project)
    assert all("an old goal" not in json.dumps(r["messages"]) for r in api.requests)


def test_the_sweep_removes_the_batchs_networks_and_only_its_own_volumes(docker_engine: Any, tmp_path: Path) -> None:
    from nanocode.batch.engines import Slot
    from nanocode.batch.ledger import Ledger
    from nanocode.batch.local import LocalEngines
    from nanocode.batch.progress import Progress
    from nanocode.batch.state import BatchState, Budgets
    from nanocode.sandbox.container import owner_labels

    labels = owner_labels("sweep", str(tmp_path))
    network = docker_engine.api.create_network(f"nanocode-sweep-{os.getpid()}", internal=True, labels=labels)["Id"]
    mine = docker_engine.api.create_volume(labels=labels)["Name"]
    other = docker_engine.api.create_volume(labels=labels | {"nanocode.owner.host": "another-host"})["Name"]
    try:
        slot = Slot("default", docker_engine, Ledger(1 << 30, 1.0))
        LocalEngines(BatchState(tmp_path, Budgets(), Progress(0, quiet=True)), [slot]).sweep()
        assert not docker_engine.api.networks(ids=[network])
        names = {v["Name"] for v in docker_engine.api.volumes(filters={"label": "nanocode"}).get("Volumes") or []}
        assert mine not in names and other in names  # another machine's batch may share the engine and the pid
    finally:
        for volume in (mine, other):
            with contextlib.suppress(Exception):
                docker_engine.api.remove_volume(volume, force=True)
        with contextlib.suppress(Exception):
            docker_engine.api.remove_network(network)


def test_a_second_engine_gets_the_image_copied(docker_engine: Any, sandbox_image: str, second_engine: Any) -> None:
    from nanocode.batch.engines import copy_image

    tag = f"nanocode-test/copied:{os.getpid()}"  # a tag the second engine lacks, of an image it has the layers of
    docker_engine.images.get(sandbox_image).tag(tag)
    said: list[str] = []
    try:
        copy_image(docker_engine, second_engine.client, "second", tag, said.append)
        assert second_engine.client.images.get(tag).id == docker_engine.images.get(tag).id
        assert said == [f"batch: copying the sandbox image {tag} to second"]
        copy_image(docker_engine, second_engine.client, "second", tag, said.append)
        assert len(said) == 1  # there already: nothing copied
    finally:
        docker_engine.images.remove(tag)
        with contextlib.suppress(Exception):
            second_engine.client.images.remove(tag)


def test_goals_left_when_the_only_engine_stops_answering_are_counted(
    docker_engine: Any,
    sandbox_image: str,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
    no_leftovers: None,
) -> None:
    from nanocode.sandbox import channel
    from nanocode.sandbox.container import remove
    from tests.second_engine import Relay

    relay = Relay("/var/run/docker.sock")  # the main engine, reached through a relay this test closes
    api.add_goal("before", Reply(message(f"{MARKER} done").body, delay=1.0))
    for text in ("after 1", "after 2"):
        api.add_goal(text, message(f"{MARKER} never"))
    out = tmp_path / "out"
    args = ["--goal", "before", "--goal", "after 1", "--goal", "after 2", "--out", str(out), "--project", str(project)]
    pids: list[int] = []
    try:
        with running(tmp_path, api, *args, "--engine", f"{relay.url}=1", "--no-pool") as process:
            pids.append(process.pid)
            wait_for(lambda: any(goal == "before" for _, goal in api.times))
            relay.close()  # the engine answers no more while the first goal gets its last reply
            _, stderr = process.communicate(timeout=120)
    finally:
        relay.close()
        for pid in pids:
            for c in owned_by(docker_engine, pid):  # the sweep could not reach them
                remove(docker_engine, c.id)
                channel.remove_folders(c.labels.get("nanocode.goal", ""))
            for volume in volumes_of(docker_engine, pid):
                volume.remove(force=True)
    assert process.returncode == 3, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [g["id"] for g in summary["results"]] == ["001", "002", "003"], summary
    assert [g["outcome"] for g in summary["results"][1:]] == ["engine", "engine"]
    assert summary["results"][2]["reason"] == "not started: no engine of the batch answers"


def test_workers_three_with_the_default_limits_runs_three_goals_at_once(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path, no_leftovers: None
) -> None:
    # The default --memory 2g and --cpus 2: a CPU limit is a ceiling, not a reservation, so three run together.
    entries = [{"id": f"w{n}", "goal": f"wide {n}"} for n in range(3)]
    for n in range(3):
        slow_goal(api, f"wide {n}", steps=6, delay=0.5)
    out = tmp_path / "out"
    with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--workers", "3")) as process:
        wait_for(lambda: len(_in_flight(api)) == 3, 120)  # all three talking to the model at the same time
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert "3 workers on default, 3 goals at once (by --workers; room for" in stderr and "CPUs shared" in stderr


def test_max_memory_total_bounds_the_goals_running_while_the_pool_prepares_the_next(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path, no_leftovers: None
) -> None:
    # Room for two sandboxes of 256m: two goals run at once, never three, and the two after them wait
    # warm (their sandboxes up) rather than unprepared.
    entries = [{"id": f"m{n}", "goal": f"room {n}"} for n in range(4)]
    for n in range(4):
        slow_goal(api, f"room {n}", steps=6, delay=0.5)
    out = tmp_path / "out"
    more = ("--workers", "4", "--memory", "256m", "--max-memory-total", "512m")
    most, sandboxes_while_two_run = 0, 0
    with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, *more)) as process:
        while process.poll() is None:
            talking = len(_in_flight(api))
            most = max(most, talking)
            if talking == 2:
                sandboxes_while_two_run = max(sandboxes_while_two_run, len(owned_by(docker_engine, process.pid)))
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert most == 2, f"{most} goals ran at once"
    assert sandboxes_while_two_run == 4, sandboxes_while_two_run


@pytest.mark.parametrize("where", ["this filesystem", "/dev/shm"])
def test_a_change_set_sent_back_is_renamed_within_a_filesystem_and_copied_across_two(
    tmp_path: Path, where: str
) -> None:
    from nanocode.batch.runner import _move

    base = tmp_path if where == "this filesystem" else Path(where)
    if not base.is_dir():
        pytest.skip(f"no {where} here")
    holder = Path(tempfile.mkdtemp(dir=base))
    try:
        source = holder / "set"
        (source / "files").mkdir(parents=True)
        (source / "manifest.json").write_text("{}")
        os.symlink("manifest.json", source / "link")
        inode = source.stat().st_ino
        target = tmp_path / "out" / "changes"
        target.parent.mkdir()
        _move(source, target)
        assert not source.exists() and (target / "manifest.json").read_text() == "{}"
        assert os.readlink(target / "link") == "manifest.json" and (target / "files").is_dir()
        assert (target.stat().st_ino == inode) == (holder.stat().st_dev == target.parent.stat().st_dev)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
