"""A client for any OpenAI-compatible /chat/completions endpoint."""

import email.utils
import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
import urllib3

from nanocode.errors import EndpointError
from nanocode.interfaces import Completion, Message
from nanocode.model import deadline, refusals


class Gate(Protocol):
    """Passed by every request: a back-off one request asks for holds back all that share the gate."""

    def wait(self) -> None: ...

    def hold(self, seconds: float) -> None: ...


RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
CACHE_MARK = {"type": "ephemeral"}
BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)
LOOKUP_SECONDS = 5.0  # the whole of a GET that only informs (the window): after it, nanocode goes on without


class OpenAIModel:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        name: str,
        max_tokens: int = 8192,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        prompt_cache: bool = True,
        gate: "Gate | None" = None,
        notify: Callable[[str], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.name = name
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.gate = gate  # shared by the models of a batch, so that one back-off slows them all
        self.notify = notify  # told of each retry, so that a person sees why nothing happens
        self.session = deadline.session()  # its requests are bounded as a whole, headers included
        # Proxies and CA bundle are read from the environment once, not on every request.
        self.session.trust_env = False
        self.session.proxies.update(requests.utils.get_environ_proxies(self.url))
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._history = _EncodedHistory()
        self.late = False  # the last lookup did not answer in time
        # Anthropic's models cache only what is marked; other providers cache by themselves.
        self.cache_marks = prompt_cache and ("claude" in name.lower() or name.startswith("anthropic/"))
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "X-Title": "nanocode",
            }
        )

    def models(self) -> Any:
        """The endpoint's model listing (GET /models), or None where it gives none in time."""
        return self._lookup(self.base_url + "/models")

    def props(self) -> Any:
        """llama.cpp's server settings (GET /props, beside /v1), which say its n_ctx; None elsewhere."""
        root = self.base_url.removesuffix("/v1")
        return self._lookup(root + "/props")

    def _lookup(self, url: str) -> Any:
        # A short deadline for the whole answer: a lookup may hold the start of a goal, never for long.
        self.late = False
        with deadline.whole(LOOKUP_SECONDS) as watch:
            try:
                response = self.session.get(url, stream=True, timeout=(LOOKUP_SECONDS, LOOKUP_SECONDS))
                with response:
                    raw = _read_until(response, watch)
                return json.loads(raw) if response.status_code == 200 else None
            except (requests.RequestException, urllib3.exceptions.HTTPError, ValueError, _Late):
                self.late = watch.expired
                return None

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion:
        # Some endpoints refuse an empty tool list: a request without tools (a summary) sends none.
        head = json.dumps({"model": self.name, "max_tokens": self.max_tokens} | ({"tools": tools} if tools else {}))
        encoded = self._history.encode(messages, self.cache_marks)
        body = f'{head[:-1]}, "messages": '.encode() + encoded + b"}"
        attempt = 0
        while True:
            attempt += 1
            if self.gate is not None:
                self.gate.wait()
            try:
                return self._once(body)
            except _Retry as retry:
                if attempt > self.retries:
                    raise EndpointError(f"{retry.reason} (gave up after {attempt} attempts)") from None
                wait = min(
                    retry.after if retry.after is not None else self.backoff * 2 ** (attempt - 1), self.max_backoff
                )
                if self.notify is not None:
                    self.notify(f"endpoint: {retry.reason}; retry {attempt}/{self.retries} in {wait:.0f} s")
                if self.gate is not None:
                    self.gate.hold(wait)
                else:
                    time.sleep(wait)

    def _once(self, body: bytes) -> Completion:
        # The timeout is for the whole reply: a server that keeps the connection alive with
        # whitespace would otherwise hold a request for ever, each read well within a read timeout.
        with deadline.whole(self.timeout) as watch:
            try:
                response = self.session.post(
                    self.url, data=body, stream=True, timeout=(min(self.timeout, 30.0), self.timeout)
                )
                with response:
                    raw = _read_until(response, watch)
            except Exception as exc:
                raise self._failed(exc, watch) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if response.status_code != 200:
            detail = _error_message(data) or raw[:300].decode(errors="replace")
            self._fail(response.status_code, detail, response, data, raw)
        if not isinstance(data, dict):
            raise _Retry(f"the model endpoint sent a reply that is not JSON (HTTP {response.status_code})")
        if data.get("error"):
            error = data["error"]
            code = error.get("code") if isinstance(error, dict) else None
            self._fail(code if isinstance(code, int) else 0, _error_message(data), response, data, raw)
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
            raise _Retry("the model endpoint sent a reply without a message")
        # The agent makes the reply a well-formed message; other fields (reasoning text) are not sent back.
        kept = ("content", "tool_calls", "reasoning_details")
        message: Message = {"role": "assistant"}
        message.update((key, value) for key, value in first["message"].items() if key in kept)
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        cost = usage.get("cost")
        return Completion(message, cost=float(cost) if isinstance(cost, (int, float)) else None, usage=usage)

    def _failed(self, exc: Exception, watch: deadline.Watch) -> Exception:
        """What a request that raised `exc` means: a retry, a refusal, or the error itself."""
        if watch.expired or isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, _Late)):
            return _Retry(f"the model endpoint did not answer within {self.timeout:g}s")
        if isinstance(exc, BAD_URL):
            return EndpointError(f"{self.url} is not a URL nanocode can use: check INFERENCE_BASE_URL")
        if isinstance(exc, requests.ConnectionError):
            return _Retry(f"cannot reach the model endpoint at {self.url}: {_root_cause(exc)}")
        if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError)):
            # Reading the body from the raw stream, urllib3's own errors arrive unwrapped.
            return _Retry(f"the model endpoint broke off its reply: {_root_cause(exc)}")
        return exc

    def _fail(self, status: int, detail: str, response: requests.Response, data: Any, raw: bytes) -> None:
        detail = detail.strip() or "no detail given"
        refusal = refusals.recognise(status, data, raw)
        if refusal is not None:
            raise EndpointError(f"the request is longer than the model's context window: {detail}", status, refusal)
        if status in RETRY_STATUS or status >= 500:
            raise _Retry(f"the model endpoint answered {status}: {detail}", _retry_after(response))
        if status == 401:
            raise EndpointError("the API key was refused (401): check OPENROUTER_API_KEY")
        if status == 402:
            raise EndpointError(f"the account has no credits left (402): {detail}")
        if status == 403:
            raise EndpointError(f"the endpoint refused this request (403): {detail}")
        if status == 404 and "tool" in detail.lower():
            raise EndpointError(f"the model {self.name} cannot use tools (404): {detail}")
        if status == 404:
            raise EndpointError(f"not found (404), check INFERENCE_BASE_URL and MODEL_NAME: {detail}")
        raise EndpointError(f"the model endpoint answered {status or 'with an error'}: {detail}", status)


class _EncodedHistory:
    """The JSON of each message, kept: the conversation only grows, so each message is encoded once.

    A message is known by identity; the agent never changes one after appending it (compaction puts
    new ones in place). Cache marks go on the system prompt and the newest message as they are
    encoded: the messages themselves stay as they are.
    """

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._parts: list[bytes] = []
        self._marked_system: tuple[Message | None, bytes] = (None, b"")

    def encode(self, messages: list[Message], marks: bool = False) -> bytes:
        same = 0
        for kept, message in zip(self._messages, messages, strict=False):
            if kept is not message:
                break
            same += 1
        del self._messages[same:], self._parts[same:]
        for message in messages[same:]:
            self._messages.append(message)
            self._parts.append(json.dumps(message).encode())
        if not marks or len(messages) < 2:
            return b"[" + b",".join(self._parts) + b"]"
        if self._marked_system[0] is not messages[0]:
            self._marked_system = (messages[0], _marked(messages[0]))
        parts = [self._marked_system[1], *self._parts[1:-1], _marked(messages[-1])]
        return b"[" + b",".join(parts) + b"]"


def _marked(message: Message) -> bytes:
    """The message's JSON with its text as a content part marked for the prompt cache."""
    content = message.get("content")
    if not isinstance(content, str) or not content:
        return json.dumps(message).encode()
    part = {"type": "text", "text": content, "cache_control": CACHE_MARK}
    return json.dumps({**message, "content": [part]}).encode()


class _Late(Exception):
    """The whole answer did not come before its deadline."""


def _read_until(response: requests.Response, watch: deadline.Watch) -> bytes:
    """The body, as long as it all comes before the deadline: a server that trickles a byte at a time
    stays within every read timeout, and is cut off here (a read that waits is ended by the watch)."""
    # read1 returns what has arrived; read() would wait for a whole chunk first.
    read = getattr(response.raw, "read1", response.raw.read)
    chunks = []
    while chunk := read(1 << 16, decode_content=True):
        chunks.append(chunk)
        if watch.expired:
            raise _Late
    return b"".join(chunks)


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message") or ""
            raw = (error.get("metadata") or {}).get("raw") if isinstance(error.get("metadata"), dict) else None
            return f"{message} ({raw})" if raw else str(message)
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return ""


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__
