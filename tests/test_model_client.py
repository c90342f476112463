"""The HTTP model client against a scripted OpenAI-compatible server: retries and clear errors."""

import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nanocode.cli import cli
from nanocode.errors import EndpointError
from nanocode.model.openai import OpenAIModel
from tests.scripted_api import Reply, ScriptedAPI, error, message

MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def client(api: ScriptedAPI, **kwargs: float) -> OpenAIModel:
    options = {"retries": 3, "backoff": 0.01, "timeout": 5.0} | kwargs
    return OpenAIModel(api.url, "key", "m", **options)  # type: ignore[arg-type]


def test_429_then_success_honours_retry_after(api: ScriptedAPI) -> None:
    api.add(error(429, "slow down", {"Retry-After": "1"}), message("fine", cost=0.5))
    started = time.monotonic()
    completion = client(api).complete(MESSAGES, [])
    assert time.monotonic() - started >= 0.9  # waited what the server asked, not the 0.01 s backoff
    assert completion.message == {"role": "assistant", "content": "fine"}
    assert completion.cost == 0.5
    assert len(api.requests) == 2


@pytest.mark.parametrize("status", [408, 500, 502, 503])
def test_retryable_statuses_then_success(api: ScriptedAPI, status: int) -> None:
    api.add(error(status, "try later"), message("ok"))
    assert client(api).complete(MESSAGES, []).message["content"] == "ok"
    assert len(api.requests) == 2


def test_gives_up_after_the_retries(api: ScriptedAPI) -> None:
    api.add(*[error(503, "down") for _ in range(5)])
    with pytest.raises(EndpointError, match=r"503: down \(gave up after 3 attempts\)"):
        client(api, retries=2).complete(MESSAGES, [])
    assert len(api.requests) == 3


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(401, "bad key"), "the API key was refused (401)"),
        (error(402, "Insufficient credits"), "no credits left (402): Insufficient credits"),
        (error(403, "blocked"), "refused this request (403): blocked"),
        (error(404, "No endpoints found that support tool use"), "the model m cannot use tools (404)"),
        (error(404, "no such model"), "check INFERENCE_BASE_URL and MODEL_NAME"),
        (error(400, "messages: bad shape"), "answered 400: messages: bad shape"),
        (Reply({"error": {"message": "roles must alternate", "code": 400}}), "answered 400: roles must alternate"),
    ],
)
def test_client_errors_are_one_clear_line_and_not_retried(api: ScriptedAPI, reply: Reply, expected: str) -> None:
    api.add(reply, message("never"))
    with pytest.raises(EndpointError) as caught:
        client(api).complete(MESSAGES, [])
    assert expected in caught.value.format_message()
    assert "\n" not in caught.value.format_message()
    assert len(api.requests) == 1


def test_error_object_in_a_200_with_a_retryable_code_is_retried(api: ScriptedAPI) -> None:
    api.add(Reply({"error": {"message": "upstream overloaded", "code": 502}}), message("ok"))
    assert client(api).complete(MESSAGES, []).message["content"] == "ok"


def test_reply_that_is_not_json_is_retried(api: ScriptedAPI) -> None:
    api.add(Reply(b"<html>gateway</html>"), message("ok"))
    assert client(api).complete(MESSAGES, []).message["content"] == "ok"


def test_request_timeout_then_success(api: ScriptedAPI) -> None:
    api.add(Reply(message("late").body, delay=3.0), message("on time"))
    started = time.monotonic()
    assert client(api, timeout=1.0).complete(MESSAGES, []).message["content"] == "on time"
    assert time.monotonic() - started < 3.0


def test_dead_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIModel(f"http://127.0.0.1:{port}/v1", "k", "m", retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match="cannot reach the model endpoint"):
        model.complete(MESSAGES, [])


def test_extra_fields_of_the_reply_are_not_sent_back(api: ScriptedAPI) -> None:
    reply = message("hi")
    reply.body["choices"][0]["message"]["reasoning"] = "long hidden text"
    api.add(reply)
    assert client(api).complete(MESSAGES, []).message == {"role": "assistant", "content": "hi"}


def test_each_message_is_encoded_once_and_the_body_stays_exact(api: ScriptedAPI) -> None:
    model = client(api)
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "é \u2603"}]
    api.add(message("one"), message("two"), message("three"))
    model.complete(history, [{"type": "function", "function": {"name": "t"}}])
    history.append({"role": "assistant", "content": "one"})
    model.complete(history, [])
    other = [{"role": "user", "content": "a different conversation"}]
    model.complete(other, [])
    assert [r["messages"] for r in api.requests] == [history[:2], history, other]
    assert api.requests[0]["tools"] == [{"type": "function", "function": {"name": "t"}}]
    assert "tools" not in api.requests[1]  # some endpoints refuse an empty list


@pytest.mark.parametrize("body", [{"choices": ["x"]}, {"choices": {"0": {}}}, {"choices": []}, {"nothing": 1}])
def test_replies_of_the_wrong_shape_are_retried_then_an_error(api: ScriptedAPI, body: dict) -> None:
    api.add(Reply(body), Reply(body))
    with pytest.raises(EndpointError, match="without a message"):
        client(api, retries=1).complete(MESSAGES, [])


def test_reasoning_details_are_kept_for_the_next_request(api: ScriptedAPI) -> None:
    reply = message("hi")
    reply.body["choices"][0]["message"]["reasoning_details"] = [{"type": "reasoning.encrypted", "data": "x"}]
    api.add(reply)
    assert client(api).complete(MESSAGES, []).message["reasoning_details"] == [
        {"type": "reasoning.encrypted", "data": "x"}
    ]


def test_the_timeout_is_for_the_whole_reply_not_each_read(api: ScriptedAPI) -> None:
    trickling = message("late")
    trickling.trickle = 6
    api.add(trickling, message("ok"))
    started = time.monotonic()
    assert client(api, timeout=2.0).complete(MESSAGES, []).message["content"] == "ok"
    assert time.monotonic() - started < 5


def test_a_compressed_reply_is_read(api: ScriptedAPI) -> None:
    import gzip
    import json

    body = gzip.compress(json.dumps(message("squeezed").body).encode())
    api.add(Reply(body, headers={"Content-Encoding": "gzip"}))
    assert client(api).complete(MESSAGES, []).message["content"] == "squeezed"


def test_a_reply_cut_off_midway_is_retried() -> None:
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def serve() -> None:
            for _ in range(2):
                connection, _ = server.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(
                        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"choices": ['
                    )

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        model = OpenAIModel(f"http://127.0.0.1:{port}/v1", "k", "m", retries=1, backoff=0.01, timeout=5)
        with pytest.raises(EndpointError, match="broke off its reply"):
            model.complete(MESSAGES, [])
        thread.join(5)


def test_a_base_url_without_a_scheme_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(EndpointError, match="check INFERENCE_BASE_URL"):
        OpenAIModel("openrouter.ai/api/v1", "k", "m", retries=3, backoff=1).complete(MESSAGES, [])
    assert time.monotonic() - started < 1


def test_a_retried_request_says_so_on_the_display(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"OPENROUTER_API_KEY": "k", "INFERENCE_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    args = ["-p", "hi", "--retries", "2", "--context-window", "8000", "--project", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--transcript", str(tmp_path / "t.jsonl")], env=env)
    assert result.exit_code == 4
    lines = [line for line in result.stderr.splitlines() if line.startswith("endpoint: ")]
    assert [line.rsplit("; ", 1)[1] for line in lines] == ["retry 1/2 in 1 s", "retry 2/2 in 2 s"]
    assert "Connection refused" in lines[0]
