"""The model's context window: how many tokens a request may hold, and where that figure came from."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_WINDOW = 128_000
# OpenRouter's listing gives context_length; other servers name it otherwise.
FIELDS = ("context_length", "context_window", "max_context_length", "max_model_len")


@dataclass(frozen=True)
class Window:
    tokens: int
    source: str  # said to the user and written to the transcript

    def describe(self) -> str:
        return f"context window {self.tokens:,} tokens ({self.source})"


def resolve(given: int | None, model: str, listing: Callable[[], Any] | None) -> Window:
    """The window a user set wins; then the endpoint's model listing; then a default most models exceed."""
    if given:
        return Window(given, "--context-window")
    listed = from_listing(listing() if listing else None, model)
    if listed:
        return Window(listed, "the endpoint's model listing")
    return Window(DEFAULT_WINDOW, "default: the endpoint did not list it; set --context-window")


def from_listing(data: Any, model: str) -> int | None:
    """The window of `model` in a GET /models answer ({"data": [{"id": ..., "context_length": ...}]})."""
    entries = data.get("data") if isinstance(data, dict) else data
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            return _window_of(entry)
    return None


def _window_of(entry: dict[str, Any]) -> int | None:
    top = entry.get("top_provider")
    for source in (entry, top if isinstance(top, dict) else {}):
        for name in FIELDS:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None
