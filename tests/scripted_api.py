"""An OpenAI-compatible /chat/completions endpoint that answers from a script.

Real sockets and real JSON: the model client under test cannot tell it from a provider.
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted HTTP answer."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: int = 0  # seconds of keep-alive whitespace, one byte a second, before the body


def message(
    content: str | None = None, *calls: dict[str, Any], cost: float | None = None, finish_reason: str = "stop"
) -> Reply:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = list(calls)
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 5}
    if cost is not None:
        usage["cost"] = cost
    return Reply(
        {
            "id": "gen-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish_reason}],
            "usage": usage,
        }
    )


_ids = iter(range(1, 1_000_000))


def call(name: str, arguments: Any, id: str | None = None) -> dict[str, Any]:
    """A tool call; arguments given as a dict are encoded as the JSON string providers send."""
    raw = json.dumps(arguments) if isinstance(arguments, dict) else arguments
    return {
        "id": id if id is not None else f"call_{next(_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": raw},
    }


def tools(*calls: dict[str, Any], content: str | None = None, cost: float | None = None) -> Reply:
    return message(content, *calls, cost=cost, finish_reason="tool_calls")


def error(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply({"error": {"message": text, "code": status}}, status=status, headers=headers or {})


def rough_tokens(body: dict[str, Any], chars_per_token: int = 4) -> int:
    """What the server counts against its context limit: four characters of JSON a token (or as many as said)."""
    return len(json.dumps(body.get("messages")) + json.dumps(body.get("tools", []))) // chars_per_token


def context_exceeded(limit: int, tokens: int) -> Reply:
    """OpenAI's answer to a request longer than the model's context window."""
    text = (
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages."
    )
    body = {"message": text, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    return Reply({"error": body}, status=400)


def text(message: dict[str, Any]) -> str:
    """A message's text: with prompt caching (the default model is Anthropic's) the system prompt and the
    newest message go as content parts."""
    content = message.get("content")
    return "".join(part["text"] for part in content) if isinstance(content, list) else content or ""


class ScriptedAPI:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.models: list[dict[str, Any]] | None = None  # GET /models answers {"data": models}; None: 404
        self.context_limit: int | None = None  # above it (rough_tokens), a 400 context_length_exceeded
        self.refusal: Callable[[int, int], Reply] = context_exceeded  # how it says so: (limit, tokens) -> reply
        self.chars_per_token = 4  # how the server counts
        self.props: dict[str, Any] | None = None  # GET /props (llama.cpp's server); None: 404
        self.get_trickle = 0  # seconds of one byte every half second before a GET's answer
        self.head_trickle = False  # every answer's status line and headers go out one byte every half second
        self.summary: str | None = None  # the answer to requests without tools (compaction summaries)
        self.usage: dict[str, Any] = {}  # added to the usage of every reply (cached tokens)
        # Per goal: replies keyed by the goal's text (the first user message), for goals run in parallel.
        self.goals: dict[str, list[Reply]] = {}
        self.goal_delay = 0.0  # added before every reply to a goal's script
        self.times: list[tuple[float, str]] = []  # when each request came, for which goal
        self.gets: list[str] = []  # the paths of GET requests, in order
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with api._lock:
                    api.requests.append(body)
                    api.headers.append(dict(self.headers))
                    reply = api._reply(body)
                if self.path != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                time.sleep(reply.delay)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + reply.trickle))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    for _ in range(reply.trickle):
                        self.wfile.write(b"\n")
                        self.wfile.flush()
                        time.sleep(1)
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                api.gets.append(self.path)
                answers = {"/v1/models": {"data": api.models} if api.models is not None else None}
                answers |= {"/v1/props": api.props, "/props": api.props}
                found = answers.get(self.path)
                data = json.dumps(found if found is not None else {"error": {"message": "not found"}}).encode()
                try:
                    self.send_response(200 if found is not None else 404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + api.get_trickle * 2))
                    self.end_headers()
                    for _ in range(api.get_trickle * 2):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.5)
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def flush_headers(self) -> None:
                head = b"".join(getattr(self, "_headers_buffer", []))
                if not api.head_trickle or not head:
                    return super().flush_headers()
                self._headers_buffer = []
                for byte in head:  # each read well within any read timeout, the whole never done
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _reply(self, body: dict[str, Any]) -> Reply:
        tokens = rough_tokens(body, self.chars_per_token)
        if self.context_limit is not None and tokens > self.context_limit:
            return self.refusal(self.context_limit, tokens)
        summarising = self.summary is not None and "tools" not in body
        reply = message(self.summary) if summarising else self._next_reply(body)
        usage = reply.body.get("usage") if isinstance(reply.body, dict) else None
        if isinstance(usage, dict) and (self.context_limit is not None or self.usage):
            usage.update({"prompt_tokens": tokens, **self.usage})
        return reply

    def start(self) -> "ScriptedAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def add_goal(self, goal: str, *replies: Reply) -> None:
        """Replies for the goal whose text is `goal`, whatever else runs at the same time."""
        with self._lock:
            self.goals.setdefault(goal, []).extend(replies)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        goal = next((text(m) for m in body.get("messages", []) if m.get("role") == "user"), None)
        if goal in self.goals:
            self.times.append((time.monotonic(), goal))
            script = self.goals[goal]
            if not script:
                return error(400, f"the test script for {goal!r} has no more replies")
            reply = script.pop(0)
            return Reply(reply.body, reply.status, reply.headers, reply.delay + self.goal_delay, reply.trickle)
        return self.script.pop(0) if self.script else error(400, "the test script has no more replies")
