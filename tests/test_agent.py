"""The agent loop, driven end to end: real HTTP client, real host executor, scripted endpoint."""

import json
from pathlib import Path
from typing import Any

import pytest

from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.display import QuietDisplay
from nanocode.errors import BudgetExceeded, EndpointError
from nanocode.host import HostExecutor
from nanocode.model.openai import OpenAIModel
from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, error, message, tools


class Collected:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(self, kind: str, **fields: Any) -> None:
        self.entries.append({"kind": kind, **fields})


def run(api: ScriptedAPI, project: Path, goal: str = "do it", **limits: Any) -> tuple[str, Agent]:
    model = OpenAIModel(api.url, "test-key", "scripted", retries=2, backoff=0.01)
    agent = Agent(model, "system prompt", Limits(**limits), 10.0, QuietDisplay(), Collected())
    executor = HostExecutor(str(project), 20000, ["test-key"])
    try:
        return agent.run(goal, executor), agent
    finally:
        executor.close()


def tool_replies(request: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


def test_multi_step_goal_writes_runs_and_completes(api: ScriptedAPI, project: Path) -> None:
    api.add(
        tools(call("write_file", {"path": "hello.py", "content": "print('hello, ' + 'world')\n"})),
        tools(call("shell", {"command": "python3 hello.py"}, id="run1")),
        message(f"{MARKER}: hello.py prints hello, world"),
    )
    answer, _agent = run(api, project, "write hello.py and run it")
    assert answer == "hello.py prints hello, world"
    assert (project / "hello.py").read_text() == "print('hello, ' + 'world')\n"
    assert tool_replies(api.requests[2])["run1"] == "hello, world\n"
    assert len(api.requests) == 3


def test_request_shape(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "echo one"}, id="a")), message(f"{MARKER} ok"))
    run(api, project, "the goal")
    first, second = api.requests
    assert first["model"] == "scripted"
    assert first["max_tokens"] > 0
    assert first["messages"][0] == {"role": "system", "content": "system prompt"}
    assert first["messages"][1] == {"role": "user", "content": "the goal"}
    assert "system" not in first
    assert {t["function"]["name"] for t in first["tools"]} == {"shell", "read_file", "write_file"}
    for tool in first["tools"]:
        assert tool["type"] == "function"
        assert tool["function"]["parameters"]["type"] == "object"
    assert second["messages"][2]["tool_calls"][0]["id"] == "a"
    assert second["messages"][3] == {"role": "tool", "tool_call_id": "a", "content": "one\n"}
    assert api.headers[0]["Authorization"] == "Bearer test-key"


def test_several_tool_calls_in_one_reply_run_in_order(api: ScriptedAPI, project: Path) -> None:
    api.add(
        tools(
            call("write_file", {"path": "a.txt", "content": "A"}, id="w"),
            call("shell", {"command": "cat a.txt; echo -n B >> a.txt"}, id="s"),
            call("read_file", {"path": "a.txt"}, id="r"),
        ),
        message(f"{MARKER} done"),
    )
    run(api, project)
    replies = tool_replies(api.requests[1])
    assert list(replies) == ["w", "s", "r"]
    assert replies == {"w": "wrote a.txt", "s": "A", "r": "AB"}


def test_turn_without_marker_is_continued_with_the_goal(api: ScriptedAPI, project: Path) -> None:
    api.add(message("I think I am nearly there."), message("Still thinking."), message(f"{MARKER} finished"))
    answer, _agent = run(api, project, "count to three")
    assert answer == "finished"
    continuation = api.requests[1]["messages"][-1]
    assert continuation["role"] == "user"
    assert "count to three" in continuation["content"]
    assert MARKER in continuation["content"]
    assert len(api.requests) == 3


def test_decides_on_tool_calls_not_finish_reason(api: ScriptedAPI, project: Path) -> None:
    # "stop" with tool calls, and "tool_calls" with none: the presence of calls decides.
    api.add(message(None, call("shell", {"command": "echo ran"}, id="x"), finish_reason="stop"))
    api.add(message(f"{MARKER} yes", finish_reason="tool_calls"))
    assert run(api, project)[0] == "yes"
    assert tool_replies(api.requests[1]) == {"x": "ran\n"}


@pytest.mark.parametrize(
    ("bad_call", "expected"),
    [
        (call("shell", "{not json", id="b"), "not valid JSON"),
        (call("shell", "", id="b"), "'command' must be a non-empty string"),
        (call("shell", {}, id="b"), "'command' must be a non-empty string"),
        (call("write_file", {"path": "x"}, id="b"), "'content' must be a string"),
        (call("launch_rockets", {"now": True}, id="b"), "unknown tool 'launch_rockets'"),
        (call("shell", "[1, 2]", id="b"), "must be a JSON object"),
        (call("read_file", {"path": "missing.txt"}, id="b"), "No such file or directory"),
    ],
)
def test_bad_model_output_becomes_an_error_result(
    api: ScriptedAPI, project: Path, bad_call: dict[str, Any], expected: str
) -> None:
    api.add(tools(bad_call), message(f"{MARKER} recovered"))
    assert run(api, project)[0] == "recovered"
    reply = tool_replies(api.requests[1])["b"]
    assert reply.startswith("ERROR")
    assert expected in reply


def test_missing_tool_call_id_gets_one(api: ScriptedAPI, project: Path) -> None:
    broken = call("shell", {"command": "echo hi"})
    del broken["id"]
    api.add(tools(broken), message(f"{MARKER} ok"))
    run(api, project)
    sent = api.requests[1]["messages"]
    given = sent[2]["tool_calls"][0]["id"]
    assert given
    assert sent[3] == {"role": "tool", "tool_call_id": given, "content": "hi\n"}


def test_failing_command_result(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "echo out; echo bad >&2; exit 4"}, id="f")), message(f"{MARKER} ok"))
    run(api, project)
    assert tool_replies(api.requests[1])["f"] == "ERROR: exit code 4\nbad\nout"


def test_no_output(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "true"}, id="n")), message(f"{MARKER} ok"))
    run(api, project)
    assert tool_replies(api.requests[1])["n"] == "(no output)"


def test_budget_model_calls(api: ScriptedAPI, project: Path) -> None:
    api.add(*[tools(call("shell", {"command": "true"})) for _ in range(5)])
    with pytest.raises(BudgetExceeded, match="3 model calls"):
        run(api, project, max_steps=3)
    assert len(api.requests) == 3


def test_budget_continuations(api: ScriptedAPI, project: Path) -> None:
    api.add(*[message("not yet") for _ in range(5)])
    with pytest.raises(BudgetExceeded, match="max-continuations 2"):
        run(api, project, max_continuations=2)
    assert len(api.requests) == 3


def test_budget_time(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "sleep 30"}, id="s")), message("never asked"))
    with pytest.raises(BudgetExceeded, match="ran out of time"):
        run(api, project, max_seconds=1.5)
    assert len(api.requests) == 1


def test_budget_cost(api: ScriptedAPI, project: Path) -> None:
    api.add(
        tools(call("shell", {"command": "true"}), cost=0.02),
        tools(call("shell", {"command": "true"}), cost=0.02),
        message(f"{MARKER} too late", cost=0.02),
    )
    with pytest.raises(BudgetExceeded, match=r"\$0.0400"):
        run(api, project, max_cost=0.03)
    assert len(api.requests) == 2


def test_stopped_goal_leaves_a_valid_conversation(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "true"}, id="one")))
    api.add(tools(call("shell", {"command": "true"}, id="two")))
    model = OpenAIModel(api.url, "k", "scripted", retries=0)
    agent = Agent(model, "sys", Limits(max_steps=2, max_cost=0.0), 10, QuietDisplay(), Collected())
    executor = HostExecutor(str(project), 1000, [])
    try:
        with pytest.raises(BudgetExceeded):
            agent.run("first goal", executor)
        api.add(message(f"{MARKER} second"))
        assert agent.run("second goal", executor) == "second"
    finally:
        executor.close()
    sent = api.requests[-1]["messages"]
    calls = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert calls == answered == ["one", "two"]
    assert sent[-1] == {"role": "user", "content": "second goal"}


def test_endpoint_error_ends_the_goal(api: ScriptedAPI, project: Path) -> None:
    api.add(message(None, call("shell", {"command": "true"})))
    with pytest.raises(EndpointError, match="no more replies"):
        run(api, project)


@pytest.mark.parametrize(
    ("reply", "expected_calls", "check"),
    [
        # content as a list of parts
        (message([{"type": "text", "text": f"{MARKER} from "}, {"type": "text", "text": "parts"}]), [], "from parts"),
        # arguments as an object rather than a JSON string
        (message(None, {"id": "o", "function": {"name": "shell", "arguments": {"command": "echo obj"}}}), ["o"], None),
        # a call that is not an object, a function that is a string, a dict for tool_calls
        (message(None, "shell"), ["call_1_0"], None),  # type: ignore[arg-type]
        (message(None, {"id": "f", "function": "shell"}), ["f"], None),
        (Reply({"choices": [{"message": {"role": "assistant", "content": "hm", "tool_calls": []}}]}), [], None),
        # two calls with the same id
        (
            message(
                None, call("shell", {"command": "echo 1"}, id="same"), call("shell", {"command": "echo 2"}, id="same")
            ),
            ["same", "call_1_1"],
            None,
        ),
    ],
)
def test_odd_replies_become_valid_messages(
    api: ScriptedAPI, project: Path, reply: Reply, expected_calls: list[str], check: str | None
) -> None:
    api.add(reply, message(f"{MARKER} done"), message(f"{MARKER} done"))
    answer, _ = run(api, project)
    if check:
        assert answer == check
        return
    sent = api.requests[1]["messages"]
    assistant = sent[2]
    assert assistant["role"] == "assistant"
    assert assistant["content"] or assistant.get("tool_calls")
    calls = assistant.get("tool_calls", [])
    assert [c["id"] for c in calls] == expected_calls
    for c in calls:
        assert c["type"] == "function"
        assert isinstance(c["function"]["name"], str) and isinstance(c["function"]["arguments"], str)
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert answered == expected_calls


def test_arguments_given_as_an_object_still_run(api: ScriptedAPI, project: Path) -> None:
    api.add(
        message(None, {"id": "o", "function": {"name": "shell", "arguments": {"command": "echo obj"}}}),
        message(f"{MARKER} ok"),
    )
    run(api, project)
    assert tool_replies(api.requests[1]) == {"o": "obj\n"}


@pytest.mark.parametrize(
    "empty",
    [
        message(None),
        message(""),
        Reply({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": {"x": 1}}}]}),
    ],
)
def test_an_empty_reply_stays_out_of_the_conversation_and_the_goal_goes_on(
    api: ScriptedAPI, project: Path, empty: Reply
) -> None:
    api.add(empty, message(f"{MARKER} ok"))
    run(api, project)
    sent = api.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "user"]  # the goal, then the continuation
    assert "empty reply" not in json.dumps(api.requests)  # nothing a model could take for its own words


def test_a_goal_the_endpoint_refuses_is_dropped_from_the_conversation(api: ScriptedAPI, project: Path) -> None:
    model = OpenAIModel(api.url, "k", "scripted", retries=0)
    agent = Agent(model, "sys", Limits(), 10, QuietDisplay(), Collected())
    executor = HostExecutor(str(project), 1000, [])
    api.add(tools(call("shell", {"command": "true"}, id="t")), error(400, "context too long"))
    try:
        with pytest.raises(EndpointError, match="400"):
            agent.run("huge goal", executor)
        api.add(message(f"{MARKER} fine"))
        assert agent.run("next goal", executor) == "fine"
    finally:
        executor.close()
    assert [m["content"] for m in api.requests[-1]["messages"]] == ["sys", "next goal"]
