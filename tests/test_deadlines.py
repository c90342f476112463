"""Every request nanocode makes ends by its deadline as a whole: a server that sends its status
line and headers one byte every half second (each read well within any read timeout) holds
neither the start nor a goal past its timeouts."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nanocode.errors import EndpointError
from nanocode.model.openai import LOOKUP_SECONDS, OpenAIModel
from tests.scripted_api import ScriptedAPI, message

SLACK = 2.0  # the machine is shared: what a deadline may overrun by, at most


def _trickling(api: ScriptedAPI) -> OpenAIModel:
    api.head_trickle = True
    api.add(message("late"))
    return OpenAIModel(api.url, "key", "m", timeout=2.0, retries=0)


def _completion(model: OpenAIModel) -> None:
    with pytest.raises(EndpointError, match=r"^the model endpoint did not answer within 2s \(gave up after 1 attempts"):
        model.complete([{"role": "user", "content": "u"}], [])


def _lookup(ask: Callable[[OpenAIModel], Any]) -> Callable[[OpenAIModel], None]:
    def check(model: OpenAIModel) -> None:
        assert ask(model) is None and model.late

    return check


@pytest.mark.parametrize(
    ("check", "seconds"),
    [
        (_completion, 2.0),
        (_lookup(OpenAIModel.models), LOOKUP_SECONDS),
        (_lookup(OpenAIModel.props), LOOKUP_SECONDS),
    ],
    ids=["chat-completions", "models", "props"],
)
def test_each_request_ends_by_its_deadline_while_the_headers_trickle(
    api: ScriptedAPI, check: Callable[[OpenAIModel], None], seconds: float
) -> None:
    model = _trickling(api)
    started = time.monotonic()
    check(model)
    took = time.monotonic() - started
    assert seconds - 0.5 < took < seconds + SLACK, took


def test_a_session_on_a_trickling_endpoint_exits_with_one_line_within_its_timeouts(
    api: ScriptedAPI, tmp_path: Path
) -> None:
    api.head_trickle = True
    api.add(message("late"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url}
    args = ["-p", "hi", "--project", str(tmp_path), "--request-timeout", "2", "--retries", "0"]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", *args], env=env, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert took < LOOKUP_SECONDS + 2 + SLACK + 2, took  # the window lookup, the request, and the start itself
    assert done.returncode == 4, done.stderr
    assert "context window 128,000 tokens (default: the endpoint did not answer in time" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "did not answer within 2s" in last and "Traceback" not in done.stderr, done.stderr


def test_a_second_request_of_the_same_client_is_watched_too(api: ScriptedAPI) -> None:
    model = OpenAIModel(api.url, "key", "m", timeout=2.0, retries=0)
    api.add(message("first"))
    assert model.complete([{"role": "user", "content": "u"}], []).message["content"] == "first"
    _trickling(api)
    started = time.monotonic()
    _completion(model)
    assert time.monotonic() - started < 2.0 + SLACK
