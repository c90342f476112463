"""How model servers say that a request outgrew the model's context window: one table, in one place.

Each server words its refusal its own way, and many say what the window is, or how long the refused
request was: both are worth keeping, so that the next request fits. A server's wording is known by
its error code or type where it gives one, else by its text.
"""

import re
from dataclasses import dataclass
from typing import Any

# The statuses a refusal comes with: 400 almost everywhere, 413 from some proxies, 422 from TGI, and
# 0 for an `error` object inside a 200 reply.
STATUSES = (0, 400, 413, 422)


@dataclass(frozen=True)
class Refusal:
    server: str  # whose wording it was, for the line the user reads
    window: int | None = None  # the window the server states, in its tokens
    requested: int | None = None  # how many tokens the refused request came to, as the server counted
    certain: bool = True  # False: a 400 that only mentions tokens or context, tried once as a refusal


@dataclass(frozen=True)
class Wording:
    server: str
    text: re.Pattern[str]  # searched in the error's text; groups `window` and `requested` where it says them
    code: str = ""  # the error's code or type, where the server sets one


def _w(server: str, pattern: str, code: str = "") -> Wording:
    return Wording(server, re.compile(pattern, re.IGNORECASE | re.DOTALL), code)


N = r"([\d,_]+)"
WORDINGS = (
    # llama.cpp's server: type exceed_context_size_error, with n_prompt_tokens and n_ctx as fields.
    _w("llama.cpp", r"exceeds the available context size", "exceed_context_size_error"),
    # OpenAI: code context_length_exceeded.
    _w(
        "OpenAI",
        rf"maximum context length is (?P<window>{N}) tokens\.? However, your messages resulted in (?P<requested>{N})",
        "context_length_exceeded",
    ),
    # OpenRouter, for any of its providers.
    _w(
        "OpenRouter",
        rf"maximum context length is (?P<window>{N}) tokens\.? However, you requested about (?P<requested>{N})",
    ),
    # vLLM, older and newer wording.
    _w("vLLM", rf"maximum context length is (?P<window>{N}) tokens\.? However, you requested (?P<requested>{N})"),
    _w("vLLM", rf"maximum context length is (?P<window>{N}) tokens\.? However, your request has (?P<requested>{N})"),
    # Anthropic's API, directly or through a router.
    _w("Anthropic", rf"prompt is too long: (?P<requested>{N}) tokens > (?P<window>{N}) maximum"),
    # Hugging Face's text-generation-inference (status 422, error_type validation).
    _w("TGI", rf"`inputs` tokens \+ `max_new_tokens` must be <= (?P<window>{N})\. Given: (?P<requested>{N})"),
    _w("TGI", rf"`inputs` must have less than (?P<window>{N}) tokens\. Given: (?P<requested>{N})"),
    # LM Studio, which runs llama.cpp: "n_keep: N >= n_ctx: M", or the context it was loaded with.
    _w("LM Studio", rf"n_keep:? \(?(?P<requested>{N})\)? ?>= ?n_ctx:? \(?(?P<window>{N})"),
    _w("LM Studio", rf"keep the first (?P<requested>{N}) tokens.*context length of only (?P<window>{N}) tokens"),
    _w("LM Studio", r"tokens to keep from the initial prompt is greater than the context length"),
    # llama-cpp-python's server.
    _w("llama-cpp-python", rf"Requested tokens \((?P<requested>{N})\) exceed context window of (?P<window>{N})"),
    # Ollama.
    _w("Ollama", r"input (length )?exceeds (the )?(maximum )?context length"),
    # Others, and the same servers worded otherwise: known to be a refusal, with nothing to learn from.
    _w(
        "the server",
        r"context_length_exceeded|context length|context window|context size|prompt is too long"
        r"|too many (input )?tokens|input is too long|reduce the length of the messages",
    ),
)
# A 400 that mentions tokens or context in any other words: worth one try as a refusal.
MAYBE = re.compile(r"\btokens?\b|context", re.IGNORECASE)


def recognise(status: int, data: Any, raw: bytes) -> Refusal | None:
    """The refusal an error reply says, if it says one."""
    if status not in STATUSES:
        return None
    error = _error(data)
    text = raw[:8000].decode(errors="replace")
    codes = {str(error.get(name) or "") for name in ("code", "type")} | {str(_get(data, "error_type"))}
    for wording in WORDINGS:
        found = wording.text.search(text)
        if found or (wording.code and wording.code in codes):
            return Refusal(wording.server, *_numbers(found, error))
    if status in (0, 400) and MAYBE.search(text):
        return Refusal("the server", certain=False)
    return None


def _numbers(found: re.Match[str] | None, error: dict[str, Any]) -> tuple[int | None, int | None]:
    """The window and the refused size: from the wording, else from fields (llama.cpp's n_ctx)."""
    groups = found.groupdict() if found else {}
    window = _int(groups.get("window")) or _int(error.get("n_ctx"))
    requested = _int(groups.get("requested")) or _int(error.get("n_prompt_tokens"))
    return window, requested


def _error(data: Any) -> dict[str, Any]:
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _get(data: Any, name: str) -> Any:
    return data.get(name) if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        digits = value.replace(",", "").replace("_", "")
        return int(digits) if digits.isdigit() and int(digits) > 0 else None
    return None
