"""An OpenAI-compatible /chat/completions endpoint that answers from a script.

Real sockets and real JSON: the model client under test cannot tell it from a provider.
"""

import json
import threading
import time
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


class ScriptedAPI:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        # Per goal: replies keyed by the goal's text (the first user message), for goals run in parallel.
        self.goals: dict[str, list[Reply]] = {}
        self.goal_delay = 0.0  # added before every reply to a goal's script
        self.times: list[tuple[float, str]] = []  # when each request came, for which goal
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with api._lock:
                    api.requests.append(body)
                    api.headers.append(dict(self.headers))
                    reply = api._next_reply(body)
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

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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
        goal = next((m.get("content") for m in body.get("messages", []) if m.get("role") == "user"), None)
        if goal in self.goals:
            self.times.append((time.monotonic(), goal))
            script = self.goals[goal]
            if not script:
                return error(400, f"the test script for {goal!r} has no more replies")
            reply = script.pop(0)
            return Reply(reply.body, reply.status, reply.headers, reply.delay + self.goal_delay, reply.trickle)
        return self.script.pop(0) if self.script else error(400, "the test script has no more replies")
