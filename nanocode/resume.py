"""Resume: the conversation of a run's last goal rebuilt from its transcript, exactly as the model saw it.

A record that is not whole (a line cut short, or one whose fields are not what nanocode writes) is
skipped and counted: the conversation is rebuilt from the whole records, never from a guess."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanocode import isolation
from nanocode.context import apply
from nanocode.errors import ConfigError
from nanocode.interfaces import Message
from nanocode.transcript import runs_folder


@dataclass
class Conversation:
    path: Path
    messages: list[Message]
    goal: Message  # the last goal's message, in `messages`
    skipped: int  # lines that were not whole records (a run cut mid-line)


def find(run: str) -> Path:
    """A transcript named by its path, or `last`: the newest under the state folder's runs/."""
    if run != "last":
        path = Path(run).expanduser()
        if not path.is_file():
            raise ConfigError(f"--resume {run}: no such transcript")
        return path
    # A run that stopped before it wrote anything (Docker not answering, say) has nothing to resume.
    runs = [path for path in runs_folder().glob("*.jsonl") if path.is_file() and path.stat().st_size]
    if not runs:
        raise ConfigError(f"--resume last: no run to resume in {runs_folder()}")
    return max(runs, key=lambda path: path.stat().st_mtime)


def project_of(path: Path) -> str | None:
    """The project the run worked in, as its first start record says."""
    start = next((r for r in read(path)[0] if r.get("kind") == "start"), {})
    project = start.get("project")
    return project if isinstance(project, str) else None


def isolation_of(path: Path) -> dict[str, Any]:
    """The isolation the run was started with: its start record's `isolation_settings` (a resumed
    run's own start records do not count, so resuming with less once does not lower the next resume).
    Older transcripts say only `sandbox`."""
    starts = [r for r in read(path)[0] if r.get("kind") == "start" and not r.get("resumed")]
    start = starts[-1] if starts else {}
    if isinstance(start.get("isolation_settings"), dict):
        return dict(start["isolation_settings"])
    return {"sandbox": start["sandbox"]} if isinstance(start.get("sandbox"), bool) else {}


def rebuild(path: Path) -> Conversation:
    records, skipped = read(path)
    messages: list[Message] = []
    goal: Message | None = None
    outcome = dropped = None
    for record in records:
        kind = record.get("kind")
        if kind == "start" and not record.get("resumed"):
            system = record.get("system")
            messages, goal = ([{"role": "system", "content": system}] if isinstance(system, str) else []), None
        elif kind == "goal":
            # A goal the endpoint refused was dropped for the goals after it; the last one is resumed whole.
            del messages[len(messages) if dropped is None else dropped :]
            goal, outcome, dropped = {"role": "user", "content": str(record.get("goal"))}, None, None
            messages.append(goal)
        elif kind == "end":
            outcome = record.get("outcome")
        elif kind == "drop" and isinstance(record.get("start"), int):
            dropped = record["start"]
        else:
            _replay(record, messages)
    if not messages or messages[0].get("role") != "system":  # its run's start record is not whole
        cut = f" ({skipped} damaged lines skipped)" if skipped else ""
        raise ConfigError(f"{path} records no system prompt{cut}: it cannot be resumed")
    if goal is None or goal not in messages:
        raise ConfigError(f"{path} holds no goal to resume")
    if outcome == "complete":
        raise ConfigError(f"the last goal in {path} is complete: there is nothing to resume")
    # Compaction put copies of the goal in place: the conversation's own is the one to pin.
    goal = next(m for m in reversed(messages) if m == goal)
    return Conversation(path, messages, goal, skipped)


def _replay(record: dict[str, Any], messages: list[Message]) -> None:
    """One record's change to the conversation, as the agent made it."""
    kind = record.get("kind")
    if kind == "response" and isinstance(record.get("message"), dict) and not record.get("empty"):
        messages.append(record["message"])
    elif kind == "tool":
        messages.append({"role": "tool", "tool_call_id": record.get("id"), "content": record.get("result")})
    elif kind == "prompt":
        messages.append({"role": "user", "content": record.get("content")})
    elif kind == "compact":
        for edits in record.get("steps") or []:
            apply(messages, edits)


def read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The whole records of a transcript; a line cut short or damaged is skipped and counted."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the transcript {path}: {exc.strerror}") from None
    records, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and _whole(record):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _whole(record: dict[str, Any]) -> bool:
    """Whether a record has the fields resume reads, of the types nanocode writes."""
    kind = record.get("kind")
    if kind == "start":
        return isinstance(record.get("system", ""), str) and isolation.well_formed(record.get("isolation_settings", {}))
    if kind == "goal":
        return isinstance(record.get("goal"), str)
    if kind == "drop":
        return type(record.get("start")) is int
    if kind == "response":
        return bool(record.get("empty")) or _message(record.get("message"), "assistant")
    if kind == "tool":
        return isinstance(record.get("id"), str) and isinstance(record.get("result"), str)
    if kind == "prompt":
        return isinstance(record.get("content"), str)
    if kind == "compact":
        steps = record.get("steps") or []
        return isinstance(steps, list) and all(isinstance(edits, list) and all(map(_edit, edits)) for edits in steps)
    return True


def _edit(edit: Any) -> bool:
    """[start, end, replacement]: two indices and the messages put in their place."""
    if not (isinstance(edit, list) and len(edit) == 3):
        return False
    start, end, replacement = edit
    indices = type(start) is int and type(end) is int and 0 <= start <= end
    return indices and isinstance(replacement, list) and all(_message(m) for m in replacement)


def _message(message: Any, role: str | None = None) -> bool:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return False
    if role is not None and message["role"] != role:
        return False
    calls = message.get("tool_calls") or []
    return (
        isinstance(message.get("content"), str | None)
        and isinstance(calls, list)
        and all(_call(call) for call in calls)
    )


def _call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return (
        isinstance(call, dict)
        and isinstance(call.get("id"), str)
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments"), str)
    )
