"""The model's context window: how many tokens a request may hold, and where that figure came from."""

from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_WINDOW = 128_000
# OpenRouter's listing gives context_length; other servers name it otherwise.
FIELDS = ("context_length", "context_window", "max_context_length", "max_model_len")


class Lookups(Protocol):
    """What a model client can be asked about its window (each within a short deadline, None if not said)."""

    late: bool

    def models(self) -> Any: ...

    def props(self) -> Any: ...


@dataclass(frozen=True)
class Window:
    tokens: int
    source: str  # said to the user and written to the transcript

    def describe(self) -> str:
        return f"context window {self.tokens:,} tokens ({self.source})"


def resolve(given: int | None, model: str, lookups: Lookups | None) -> Window:
    """The window a user set wins; then the endpoint's model listing (asked once); then a llama.cpp
    server's /props; then a default most models exceed."""
    if given:
        return Window(given, "--context-window")
    if lookups is None:
        return Window(DEFAULT_WINDOW, "default; set --context-window")
    listing = lookups.models()
    late = lookups.late
    found = from_listing(listing, model)
    if found:
        tokens, listed = found
        return Window(tokens, "the endpoint's model listing" + ("" if listed == model else f", as {listed}"))
    n_ctx = None if late else from_props(lookups.props())  # an endpoint too slow to list is not asked again
    if n_ctx:
        return Window(n_ctx, "the server's /props, n_ctx")
    why = "the endpoint did not answer in time" if late or lookups.late else "the endpoint did not say"
    return Window(DEFAULT_WINDOW, f"default: {why}; set --context-window")


def from_listing(data: Any, model: str) -> tuple[int, str] | None:
    """The window of `model` in a GET /models answer ({"data": [{"id": ..., "context_length": ...}]}),
    and the id it is listed as: the same, else another spelling of it (a path, a prefix), else the
    only model the endpoint serves."""
    entries = data.get("data") if isinstance(data, dict) else data
    listed = [e for e in (entries if isinstance(entries, list) else []) if isinstance(e, dict)]
    ids = [str(e.get("id") or "") for e in listed]
    for match in (_same, _path, _prefix):
        found = [e for e, i in zip(listed, ids, strict=True) if match(i, model)]
        if len(found) == 1:
            return _with_id(found[0])
    return _with_id(listed[0]) if len(listed) == 1 else None


def _with_id(entry: dict[str, Any]) -> tuple[int, str] | None:
    tokens = _window_of(entry)
    return (tokens, str(entry.get("id"))) if tokens else None


def _same(listed: str, model: str) -> bool:
    return listed == model


def _path(listed: str, model: str) -> bool:
    """`qwen2.5-coder` and `models/qwen2.5-coder.gguf`, `org/name` and `name`."""
    base = listed.rsplit("/", 1)[-1].removesuffix(".gguf").lower()
    return base == model.rsplit("/", 1)[-1].removesuffix(".gguf").lower()


def _prefix(listed: str, model: str) -> bool:
    """`qwen2.5-coder` and `qwen2.5-coder:1.5b` (Ollama's tags), either way round."""
    a, b = listed.lower(), model.lower()
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def from_props(data: Any) -> int | None:
    """llama.cpp's n_ctx, at the top of /props or in its default generation settings."""
    if not isinstance(data, dict):
        return None
    settings = data.get("default_generation_settings")
    for source in (data, settings if isinstance(settings, dict) else {}):
        value = source.get("n_ctx")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _window_of(entry: dict[str, Any]) -> int | None:
    top = entry.get("top_provider")
    for source in (entry, top if isinstance(top, dict) else {}):
        for name in FIELDS:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None
