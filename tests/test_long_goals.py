"""Long goals against servers as they are: each server's own refusal, a server that counts tokens its own
way and never states its window, a result larger than the window, a summariser that answers nothing.

Every server here is tests/scripted_api.py on a real socket, answering with the wording and the
fields the real server uses.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nanocode.model import refusals
from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, message, rough_tokens, tools
from tests.test_context import assert_valid, big_steps, invoke, records

Refuse = Callable[[int, int], Reply]


def llama_cpp(limit: int, tokens: int) -> Reply:
    error = {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": tokens,
        "n_ctx": limit,
    }
    return Reply({"error": error}, status=400)


def vllm(limit: int, tokens: int) -> Reply:
    text = (
        f"This model's maximum context length is {limit} tokens. However, you requested {tokens + 100} tokens "
        f"({tokens} in the messages, 100 in the completion). Please reduce the length of the messages or completion."
    )
    return Reply({"object": "error", "message": text, "type": "BadRequestError", "param": None, "code": 400}, 400)


def openrouter(limit: int, tokens: int) -> Reply:
    text = (
        f"This endpoint's maximum context length is {limit} tokens. However, you requested about {tokens} tokens "
        f'({tokens} of text input). Please reduce the length of either one, or use the "middle-out" transform.'
    )
    return Reply({"error": {"message": text, "code": 400, "metadata": {"provider_name": None}}}, 400)


def anthropic_via_router(limit: int, tokens: int) -> Reply:
    raw = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"prompt is too long: {tokens} tokens > {limit} maximum"},
    }
    error = {
        "message": "Provider returned error",
        "code": 400,
        "metadata": {"raw": json.dumps(raw), "provider_name": "Anthropic"},
    }
    return Reply({"error": error}, 400)


def tgi(limit: int, tokens: int) -> Reply:
    text = (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {limit}. "
        f"Given: {tokens} `inputs` tokens and 1024 `max_new_tokens`"
    )
    return Reply({"error": text, "error_type": "validation"}, 422)


def lm_studio(limit: int, tokens: int) -> Reply:
    text = (
        f"The number of tokens to keep from the initial prompt is greater than the context length "
        f"(n_keep: {tokens}>= n_ctx: {limit}). Try to load the model with a larger context length, or provide a "
        "shorter input."
    )
    return Reply({"error": text}, 400)


def ollama(limit: int, tokens: int) -> Reply:
    error = {"message": "input length exceeds the context length", "type": "api_error", "param": None, "code": None}
    return Reply({"error": error}, 400)


def openai(limit: int, tokens: int) -> Reply:
    text = (
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in {tokens} "
        "tokens. Please reduce the length of the messages."
    )
    body = {"message": text, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    return Reply({"error": body}, 400)


# Each server's refusal: who it is, and whether it states the window.
SERVERS: list[tuple[Refuse, str, bool]] = [
    (openai, "OpenAI", True),
    (openrouter, "OpenRouter", True),
    (vllm, "vLLM", True),
    (llama_cpp, "llama.cpp", True),
    (anthropic_via_router, "Anthropic", True),
    (tgi, "TGI", True),
    (lm_studio, "LM Studio", True),
    (ollama, "Ollama", False),
]


def run_long(api: ScriptedAPI, tmp_path: Path, project: Path, *args: str) -> tuple[Any, list[dict[str, Any]]]:
    transcript = tmp_path / "run.jsonl"
    result = invoke(
        api, "-p", "print", "--model", "scripted", "--project", str(project), "--transcript", str(transcript),
        "--retries", "0", *args,
    )  # fmt: skip
    return result, records(transcript)


def refused(api: ScriptedAPI) -> list[dict[str, Any]]:
    assert api.context_limit is not None
    steps = [r for r in api.requests if "tools" in r]
    return [r for r in steps if rough_tokens(r, api.chars_per_token) > api.context_limit]


@pytest.mark.parametrize(("refuse", "server", "states"), SERVERS, ids=[s[1] for s in SERVERS])
def test_each_servers_refusal_is_understood_and_teaches_the_window(
    api: ScriptedAPI, project: Path, tmp_path: Path, refuse: Refuse, server: str, states: bool
) -> None:
    api.context_limit = 5000  # far below what nanocode is told
    api.refusal = refuse
    api.summary = "Printed lines of x, twelve times, each numbered; nothing failed and nothing is left to do."
    api.add(*big_steps(12, 4000), message(f"{MARKER} done"))
    result, entries = run_long(api, tmp_path, project, "--context-window", "100000")
    assert result.exit_code == 0, result.stderr
    assert 1 <= len(refused(api)) <= 3
    for request in api.requests:
        if "tools" in request:
            assert_valid(request, "print")
    windows = [e for e in entries if e["kind"] == "window"]
    assert windows and windows[-1]["tokens"] < min(rough_tokens(r) for r in refused(api))  # below what was refused
    if states:
        assert windows[0]["tokens"] == 5000 and f"{server} says its window is 5,000 tokens" in result.stderr
    assert entries[-1]["outcome"] == "complete"


def test_a_server_counting_two_characters_a_token_that_never_states_its_window(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.context_limit = 6000
    api.chars_per_token = 2  # digits: twice the tokens nanocode's four characters a token expect
    api.refusal = ollama  # refuses without a figure
    api.summary = "Printed numbered lines of digits, thirty times over; nothing failed; nothing is left to do now."
    steps = [tools(call("shell", {"command": f"seq 1 600 | tr '\\n' ' '; echo {i}"})) for i in range(30)]
    api.add(*steps, message(f"{MARKER} done"))
    result, entries = run_long(api, tmp_path, project)  # no --context-window, no /models: 128,000 assumed
    assert result.exit_code == 0, result.stderr
    assert 1 <= len(refused(api)) <= 3
    assert entries[-1]["outcome"] == "complete"


def test_a_tool_result_three_times_the_window_is_never_sent_whole(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    window = 4096
    (project / "big.txt").write_text("".join(f"line {n}: " + "x" * 40 + "\n" for n in range(1500)))  # ~3 windows
    api.context_limit = window
    api.add(
        tools(call("read_file", {"path": "big.txt"})),
        tools(call("read_file", {"path": "big.txt", "start_line": 700, "end_line": 705})),
        message(f"{MARKER} read"),
    )
    result, entries = run_long(api, tmp_path, project, "--context-window", str(window), "--output-cap", "200000")
    assert result.exit_code == 0, result.stderr
    assert not refused(api)
    first = next(m for m in api.requests[1]["messages"] if m["role"] == "tool")["content"]
    assert first.startswith("line 0: ") and "line 1499: " in first and "start_line and end_line" in first
    part = next(m for m in api.requests[2]["messages"][::-1] if m["role"] == "tool")["content"]
    assert part.startswith("line 699: ") and part.count("\n") == 6 and "line 705: " not in part
    assert [e["reason"] for e in entries if e["kind"] == "compact"] == ["bound"]


@pytest.mark.parametrize("useless", [f"{MARKER}", "", "Done."])
def test_a_summary_that_carries_nothing_is_not_used(
    api: ScriptedAPI, project: Path, tmp_path: Path, useless: str
) -> None:
    api.context_limit = 8000
    api.summary = useless
    api.add(*big_steps(40, 3000), message(f"{MARKER} done"))
    result, entries = run_long(api, tmp_path, project, "--context-window", "8000")
    assert result.exit_code == 0, result.stderr
    assert "the summary was not used" in result.stderr
    assert any(e["kind"] == "summary_rejected" for e in entries)
    for request in api.requests:
        if "tools" in request:
            assert useless not in [m.get("content") for m in request["messages"][2:] if m["role"] == "user"]
            assert_valid(request, "print")


def test_an_unknown_400_about_tokens_is_tried_once_as_a_refusal(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    odd = Reply({"error": {"message": "too much: 9000 tokens is more than we take", "code": 400}}, 400)
    api.add(tools(call("shell", {"command": "echo hi"})), odd, message(f"{MARKER} fine"))
    result, _ = run_long(api, tmp_path, project)
    assert result.exit_code == 0, result.stderr
    api.add(odd, odd)
    again, _ = run_long(api, tmp_path, project)
    assert again.exit_code == 4 and "too much" in again.stderr


@pytest.mark.parametrize(("refuse", "server", "states"), SERVERS, ids=[s[1] for s in SERVERS])
def test_the_refusal_table_reads_each_servers_figures(refuse: Refuse, server: str, states: bool) -> None:
    reply = refuse(4096, 6376)
    raw = json.dumps(reply.body).encode()
    found = refusals.recognise(reply.status, reply.body, raw)
    assert found is not None and found.server == server and found.certain
    assert found.window == (4096 if states else None)


def window_line(api: ScriptedAPI, tmp_path: Path, project: Path, model: str = "qwen2.5-coder-1.5b") -> str:
    api.add(message(f"{MARKER} ok"))
    result = invoke(api, "-p", "hi", "--model", model, "--project", str(project), "--transcript", str(tmp_path / "t"))
    assert result.exit_code == 0, result.stderr
    return next(line for line in result.stderr.splitlines() if "context window" in line)


@pytest.mark.parametrize(
    ("models", "props", "expected"),
    [
        ([{"id": "qwen2.5-coder-1.5b", "context_length": 8192}], None, "8,192 tokens (the endpoint's model listing)"),
        (
            [{"id": "models/qwen2.5-coder-1.5b.gguf", "max_model_len": 4096}, {"id": "other", "max_model_len": 9}],
            None,
            "4,096 tokens (the endpoint's model listing, as models/qwen2.5-coder-1.5b.gguf)",
        ),
        ([{"id": "qwen2.5-coder-1.5b:q4", "context_length": 2048}], None, "2,048 tokens (the endpoint's model listing"),
        ([{"id": "the-only-one", "context_window": 16384}], None, "16,384 tokens (the endpoint's model listing"),
        (None, {"default_generation_settings": {"n_ctx": 6144}}, "6,144 tokens (the server's /props, n_ctx)"),
        (None, None, "128,000 tokens (default: the endpoint did not say; set --context-window)"),
    ],
)
def test_the_window_is_found_where_the_server_says_it_and_the_start_says_where(
    api: ScriptedAPI, project: Path, tmp_path: Path, models: Any, props: Any, expected: str
) -> None:
    api.models, api.props = models, props
    assert expected in window_line(api, tmp_path, project)
    assert api.gets.count("/v1/models") == 1


def test_a_trickling_listing_cannot_hold_the_start(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.models = [{"id": "qwen2.5-coder-1.5b", "context_length": 8192}]
    api.get_trickle = 30  # a byte every half second for 30 s: each read well within any read timeout
    started = time.monotonic()
    line = window_line(api, tmp_path, project)
    assert time.monotonic() - started < 12
    assert "128,000 tokens (default: the endpoint did not answer in time" in line
    assert "/props" not in api.gets  # too slow to list: not asked again
