"""A model that answers with the assistant messages recorded in a transcript."""

import json
from pathlib import Path
from typing import Any

from nanocode.errors import ConfigError, EndpointError
from nanocode.interfaces import Completion, Message


class ReplayModel:
    def __init__(self, transcript: Path):
        try:
            lines = transcript.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the transcript to replay: {exc}") from None
        self.replies: list[Message] = []
        self.name = "replay"
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                raise ConfigError(f"{transcript}:{number}: not a transcript line (a JSON object)")
            if entry.get("kind") == "start":
                self.name = f"replay of {entry.get('model', 'a model')}"
            if entry.get("kind") == "response" and isinstance(entry.get("message"), dict):
                self.replies.append(entry["message"])
        if not self.replies:
            raise ConfigError(f"{transcript} holds no model replies to replay")
        self._next = 0

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion:
        if self._next >= len(self.replies):
            raise EndpointError("the replayed transcript has no more model replies")
        self._next += 1
        return Completion(self.replies[self._next - 1])
