"""Long goals: the context within the window, compaction, checks, the loop breaker, prompt caching, AGENTS.md.

Against tests/scripted_api.py with a context limit: it counts the tokens of each request roughly and
answers 400 context_length_exceeded above the limit, as OpenAI does.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nanocode.cli import cli
from nanocode.context import Context, Window, apply
from nanocode.errors import EndpointError
from nanocode.model.openai import OpenAIModel
from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, message, rough_tokens, text, tools
from tests.test_agent import Collected

BIG = 6000  # characters of output per step


def invoke(api: ScriptedAPI, *args: str, env: dict[str, str] | None = None) -> Any:
    base = {"OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url} | (env or {})
    return CliRunner().invoke(cli, list(args), env=base, catch_exceptions=False)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_valid(request: dict[str, Any], goal: str) -> None:
    """What every endpoint accepts: the system prompt first, the goal, and each call answered right after it."""
    messages = request["messages"]
    assert messages[0]["role"] == "system"
    assert goal in [text(m) for m in messages if m["role"] == "user"]
    open_calls: set[str] = set()
    for m in messages[1:]:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, "a tool message without its call"
            open_calls.remove(m["tool_call_id"])
            continue
        assert not open_calls, "a call without its answer"
        open_calls = {c["id"] for c in m.get("tool_calls", [])}
    assert not open_calls, "a call without its answer"


def big_steps(count: int, size: int = BIG) -> list[Reply]:
    """Steps whose results are large and all different (the loop breaker stays quiet)."""
    return [
        tools(call("shell", {"command": f"head -c {size} /dev/zero | tr '\\0' x; echo; echo {i}"}))
        for i in range(count)
    ]


def test_a_200_step_goal_with_large_outputs_completes_under_a_small_window(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    (project / "AGENTS.md").write_text("Always answer in haiku. (project rule 7)\n")
    api.models = [{"id": "other", "context_length": 1000000}, {"id": "scripted", "context_length": 8000}]
    api.context_limit = 8000
    api.summary = "Printed many lines of x; nothing else happened."
    api.add(*big_steps(200), message(f"{MARKER} all printed"))
    transcript = tmp_path / "run.jsonl"
    goal = "print x two hundred times"
    result = invoke(
        api, "-p", goal, "--model", "scripted", "--project", str(project), "--transcript", str(transcript),
        "--max-steps", "300",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "all printed\n"
    steps = [r for r in api.requests if "tools" in r]
    summaries = [r for r in api.requests if "tools" not in r]
    assert len(steps) == 201
    for request in steps:
        assert_valid(request, goal)
        assert rough_tokens(request) <= 8000  # never refused: the estimate kept it within the window
        assert "(project rule 7)" in request["messages"][0]["content"]  # AGENTS.md survives every compaction
    assert summaries, "the older turns were summarised"
    assert all(r["messages"][0]["content"].startswith("You summarise") for r in summaries)
    entries = records(transcript)
    start, end = entries[0], entries[-1]
    assert (start["context_window"], start["context_window_source"]) == (8000, "the endpoint's model listing")
    compactions = [e for e in entries if e["kind"] == "compact"]
    assert end["outcome"] == "complete" and end["compactions"] == len(compactions) > 10
    assert all(e["after"] < e["before"] for e in compactions)
    assert all(e["cut"] and e["summarised"] for e in compactions)
    assert "context: compacted" in result.stderr


def conversation(turns: int, size: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": "the goal"}]
    for i in range(turns):
        calls = [call("read_file", {"path": f"f{i}"}, id=f"r{i}"), call("shell", {"command": f"c{i}"}, id=f"s{i}")]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        messages.append({"role": "tool", "tool_call_id": f"r{i}", "content": f"{i}" * size})
        messages.append({"role": "tool", "tool_call_id": f"s{i}", "content": "short"})
    return messages


def test_cutting_old_results_puts_new_messages_in_place_and_keeps_the_rest() -> None:
    messages = conversation(10, 3000)
    before = list(messages)
    context = Context(Window(20000, "test"), 0.8, summariser=None, recorder=Collected())
    context.start_goal(messages[1])
    context.compact(messages, "threshold")
    assert len(messages) == len(before)  # cutting was enough: nothing summarised
    changed = [i for i, (a, b) in enumerate(zip(before, messages, strict=True)) if a is not b]
    assert changed and all(before[i]["role"] == "tool" and len(before[i]["content"]) == 3000 for i in changed)
    assert all(len(before[i]["content"]) == 3000 for i in changed)  # the old objects are untouched
    assert changed[-1] < len(messages) - 3  # the latest turns are whole
    cut = messages[changed[0]]
    assert cut["tool_call_id"] == "r0" and cut["content"].startswith("0" * 600) and cut["content"].endswith("0" * 600)
    assert "1800 characters of this result were cut" in cut["content"]
    assert "call read_file again with the same arguments" in cut["content"]
    [entry] = context.recorder.entries  # type: ignore[union-attr]
    replayed = list(before)
    for edits in json.loads(json.dumps(entry["steps"])):
        apply(replayed, edits)
    assert replayed == messages


def test_a_summary_keeps_the_system_prompt_the_goal_and_the_latest_turns() -> None:
    messages = conversation(30, 3000)
    system, goal, latest = messages[0], messages[1], messages[-3:]
    context = Context(Window(20000, "test"), 0.8, summariser=None)
    context.start_goal(goal)
    context.compact(messages, "threshold")
    assert messages[0] is system and messages[1] is goal
    assert messages[2]["role"] == "user" and "summary of them follows" in messages[2]["content"]
    assert '- shell {"command": "c26"}' in messages[2]["content"]  # no model: the calls made, listed
    assert messages[-3:] == latest and all(a is b for a, b in zip(messages[-3:], latest, strict=True))
    assert_valid({"messages": messages}, "the goal")


def test_a_context_error_mid_goal_compacts_and_goes_on(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.context_limit = 5000  # well below what nanocode is told, so only the endpoint's 400 can say so
    api.summary = "Printed lines of x."
    api.add(*big_steps(12, 4000), message(f"{MARKER} done"))
    transcript = tmp_path / "run.jsonl"
    result = invoke(
        api, "-p", "print", "--model", "scripted", "--project", str(project), "--transcript", str(transcript),
        "--context-window", "100000", "--compact-model", "small-summariser",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    steps = [r for r in api.requests if "tools" in r]
    refused = [r for r in steps if rough_tokens(r) > 5000]
    assert refused, "the endpoint refused at least one request as too long"
    summaries = [r for r in api.requests if "tools" not in r]
    assert summaries and {r["model"] for r in summaries} == {"small-summariser"}
    assert {r["model"] for r in steps} == {"scripted"}
    for request in steps:
        assert_valid(request, "print")
    # The one refusal taught the goal the server's window: compactions after it come before a refusal.
    assert len(refused) == 1
    entries = records(transcript)
    reasons = [e["reason"] for e in entries if e["kind"] == "compact"]
    assert reasons[0] == "refused" and set(reasons[1:]) <= {"threshold"}, reasons
    assert [e["tokens"] for e in entries if e["kind"] == "window"] == [5000]
    assert "OpenAI says its window is 5,000 tokens" in result.stderr
    assert entries[0]["context_window_source"] == "--context-window"
    assert entries[-1]["outcome"] == "complete"


def test_check_keeps_the_goal_going_until_it_passes(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(
        message(f"{MARKER} it is done"),  # it is not: done.txt does not exist
        tools(call("write_file", {"path": "done.txt", "content": "yes\n"})),
        message(f"{MARKER} now it is"),
    )
    transcript = tmp_path / "run.jsonl"
    result = invoke(
        api, "-p", "make done.txt", "--project", str(project), "--transcript", str(transcript),
        "--check", "true", "--check", "cat done.txt", "--max-continuations", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "now it is\n"
    told = text(api.requests[1]["messages"][-1])
    assert "not accepted" in told and "1 of 2" in told and "`cat done.txt`" in told and "No such file" in told
    assert "check failed: cat done.txt" in result.stderr
    assert result.stderr.count("check passed: true") == 2 and "check passed: cat done.txt" in result.stderr
    end = records(transcript)[-1]
    assert end["checks"] == [{"command": "true", "exit_code": 0}, {"command": "cat done.txt", "exit_code": 0}]


def test_a_failed_check_counts_as_a_continuation(api: ScriptedAPI, project: Path) -> None:
    api.add(message(f"{MARKER} done"), message(f"{MARKER} done"))
    result = invoke(
        api, "-p", "g", "--project", str(project), "--max-continuations", "0", env={"NANOCODE_CHECK": "exit 3"}
    )
    assert result.exit_code == 5, result.stderr
    assert "check failed: exit 3" in result.stderr and "max-continuations" in result.stderr


def test_a_looping_model_ends_with_no_progress(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(*[tools(call("shell", {"command": "echo same"})) for _ in range(10)])
    transcript = tmp_path / "run.jsonl"
    result = invoke(api, "-p", "g", "--project", str(project), "--transcript", str(transcript))
    assert result.exit_code == 5
    assert "no progress" in result.stderr and "--max-repeats 6" in result.stderr
    assert len(api.requests) == 6
    results = [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]
    assert results[:2] == ["same\n", "same\n"]
    assert [r.startswith("same\n") and f"result {n} times in a row" in r for n, r in enumerate(results, 1)][2:] == [
        True
    ] * 3
    end = records(transcript)[-1]
    assert end["outcome"] == "no progress"


def test_the_breaker_thresholds_are_options(api: ScriptedAPI, project: Path) -> None:
    api.add(*[tools(call("shell", {"command": "echo same"})) for _ in range(4)])
    result = invoke(api, "-p", "g", "--project", str(project), "--repeat-note", "2", "--max-repeats", "3")
    assert result.exit_code == 5 and "no progress" in result.stderr
    assert len(api.requests) == 3
    assert "result 2 times in a row" in text(api.requests[2]["messages"][-1])


@pytest.mark.parametrize(
    ("model", "args", "marked"),
    [
        ("anthropic/claude-sonnet-4-6", [], True),
        ("claude-opus-4-1", [], True),
        ("anthropic/claude-sonnet-4-6", ["--no-prompt-cache"], False),
        ("openai/gpt-4o", [], False),
    ],
)
def test_request_shape_with_cache_markers(
    api: ScriptedAPI, project: Path, model: str, args: list[str], marked: bool
) -> None:
    api.usage = {"prompt_tokens_details": {"cached_tokens": 700}, "cache_creation_input_tokens": 50}
    api.add(tools(call("shell", {"command": "echo one"})), message(f"{MARKER} ok"))
    result = invoke(api, "-p", "the goal", "--model", model, "--project", str(project), *args)
    assert result.exit_code == 0, result.stderr
    last = api.requests[-1]["messages"]
    body = json.dumps(api.requests[-1])
    if not marked:
        assert "cache_control" not in body
        assert all(isinstance(m["content"], str) for m in last if m.get("content") is not None)
        return
    assert body.count("cache_control") == 2
    mark = {"type": "ephemeral"}
    assert last[0]["content"] == [{"type": "text", "text": text(last[0]), "cache_control": mark}]
    assert last[-1]["content"] == [{"type": "text", "text": "one\n", "cache_control": mark}]
    assert last[-1]["role"] == "tool" and last[-1]["tool_call_id"]
    assert [m["content"] for m in last[1:-1]] == ["the goal", None]  # the middle goes as it was
    assert "1,400 read from the cache, 100 written to it" in result.stderr


def test_agents_md_from_the_project_down_to_the_current_folder(
    api: ScriptedAPI, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "AGENTS.md").write_text("top rule\n")
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / "sub" / "AGENTS.md").write_text("sub rule\n")
    (project / "sub" / "deeper" / "AGENTS.md").symlink_to(tmp_path / "secret.txt")  # planted: not followed
    (tmp_path / "secret.txt").write_text("host secret\n")
    monkeypatch.chdir(project / "sub" / "deeper")
    api.add(message(f"{MARKER} ok"), message(f"{MARKER} ok"))
    assert invoke(api, "-p", "g", "--project", str(project), "--model", "m").exit_code == 0
    system = api.requests[0]["messages"][0]["content"]
    assert "AGENTS.md, sub/AGENTS.md" in system
    assert system.index("top rule") < system.index("sub rule")
    assert "host secret" not in system
    assert invoke(api, "-p", "g", "--project", str(project), "--model", "m", "--no-instructions").exit_code == 0
    assert "top rule" not in api.requests[1]["messages"][0]["content"]


def test_agents_md_is_capped(api: ScriptedAPI, project: Path) -> None:
    (project / "AGENTS.md").write_text("rule\n" * 10000)
    api.add(message(f"{MARKER} ok"))
    assert invoke(api, "-p", "g", "--project", str(project), "--model", "m").exit_code == 0
    system = api.requests[0]["messages"][0]["content"]
    assert "cut here: they are longer than 32 KiB" in system
    assert 32 * 1024 < len(system) < 40 * 1024


OPENAI = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
OPENROUTER = (
    "This endpoint's maximum context length is 200000 tokens. However, you requested about 250000 tokens "
    '(250000 of text input). Please reduce the length of either one, or use the "middle-out" transform.'
)
ANTHROPIC = {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}


@pytest.mark.parametrize(
    ("status", "body", "exceeded"),
    [
        (400, {"error": {"message": OPENAI, "code": "context_length_exceeded"}}, True),
        (400, {"error": {"message": OPENROUTER, "code": 400}}, True),
        (400, {"type": "error", "error": ANTHROPIC}, True),
        (200, {"error": {"message": "Input is too long for requested model.", "code": 400}}, True),
        (400, {"error": {"message": "Invalid schema for function 'shell'", "code": 400}}, False),
    ],
)
def test_context_length_errors_are_recognised(api: ScriptedAPI, status: int, body: Any, exceeded: bool) -> None:
    api.add(Reply(body, status=status))
    model = OpenAIModel(api.url, "k", "m", retries=0)
    with pytest.raises(EndpointError) as caught:
        model.complete([{"role": "user", "content": "hi"}], [])
    assert caught.value.context_exceeded is exceeded
    assert caught.value.format_message().count("\n") == 0


def test_the_window_from_the_option_the_listing_or_the_default(api: ScriptedAPI, project: Path) -> None:
    api.models = [{"id": "listed", "top_provider": {"context_length": 64000}}]
    api.add(message(f"{MARKER} ok"), message(f"{MARKER} ok"))
    repl = CliRunner().invoke(
        cli,
        ["--project", str(project), "--model", "listed"],
        input="g\n\n",
        env={"OPENROUTER_API_KEY": "k", "INFERENCE_BASE_URL": api.url},
    )
    assert "context window 64,000 tokens (the endpoint's model listing)" in repl.stderr
    result = invoke(api, "--project", str(project), "--model", "unlisted", env={"NANOCODE_CONTEXT_WINDOW": "9000"})
    assert "context window 9,000 tokens (--context-window)" in result.stderr


def test_checks_run_in_the_sandbox(api: ScriptedAPI, project: Path, sandbox_image: str, no_leftovers: None) -> None:
    api.add(message(f"{MARKER} done"))
    check = 'test "$HOME" = /home/sandbox && test ! -e /run/docker.sock'
    result = invoke(api, "-p", "g", "--project", str(project), "--sandbox", "--check", check)
    assert result.exit_code == 0, result.stderr
    assert f"check passed: {check}" in result.stderr
