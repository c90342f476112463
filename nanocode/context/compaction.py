"""Compaction as edits of the message list: old tool results cut to head and tail, older turns summarised.

An edit is [start, end, messages]: messages[start:end] becomes `messages`. Edits put new message
objects in place and never change a kept one (the model client caches each message's JSON by
identity). The transcript records them, and resume replays them, so a rebuilt conversation is
the one the model saw.
"""

import json
from typing import Any

from nanocode import prompts
from nanocode.interfaces import Message

Edit = list[Any]  # [start, end, list[Message]]

CHARS_PER_TOKEN = 4  # the estimate's start: the endpoint's counts calibrate it (Context.scale)
SUMMARY_FLOOR = 200  # characters: a summary shorter than this cannot carry the work it replaces
CUT_OVER = 2000  # characters: an old tool result longer than this is cut
CUT_KEEP = 600  # characters kept at each end of a cut result
RENDER_RESULT = 1500  # characters of each tool result shown to the summariser


def tokens(message: Message) -> int:
    """A rough count (four characters a token), cheap enough for every step."""
    content = message.get("content")
    size = len(content) if isinstance(content, str) else len(json.dumps(content)) if content else 0
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        size += len(function.get("name") or "") + len(function.get("arguments") or "") + 40
    return size // CHARS_PER_TOKEN + 4


def apply(messages: list[Message], edits: list[Edit]) -> None:
    """Applies edits given against the same list, from the last to the first, so that indices hold."""
    for start, end, replacement in sorted(edits, key=lambda edit: edit[0], reverse=True):
        messages[start:end] = replacement


def recent_start(messages: list[Message], sizes: list[int], budget: int) -> int:
    """Where the latest turns begin: as many as fit in `budget` tokens, and the last reply of the model at least.

    A turn begins at a user or an assistant message, never at a tool result, so the tail kept
    holds every call's answer and every answer's call.
    """
    replies = (i for i in range(len(messages) - 1, 0, -1) if messages[i]["role"] == "assistant")
    must_keep = next(replies, len(messages))
    start, total = len(messages), 0
    for index in range(len(messages) - 1, 0, -1):
        total += sizes[index]
        if messages[index]["role"] == "tool":
            continue
        if total > budget and index < must_keep:
            break
        start = index
    return start


def cut_results(messages: list[Message], end: int, keep: int = CUT_KEEP, over: int = CUT_OVER) -> list[Edit]:
    """Edits that cut the long tool results before `end` to their head and tail, with a note."""
    calls: dict[str, dict[str, Any]] = {}
    edits: list[Edit] = []
    for index in range(1, end):
        message = messages[index]
        for call in message.get("tool_calls") or ():
            calls[call["id"]] = call["function"]
        content = message.get("content")
        if message["role"] != "tool" or not isinstance(content, str) or len(content) <= over:
            continue
        function = calls.get(message.get("tool_call_id", ""), {})
        name = function.get("name") or "the tool"
        note = prompts.CUT_RESULT.format(cut=len(content) - 2 * keep, name=name)
        text = content[:keep] + note + content[-keep:]
        edits.append([index, index + 1, [{**message, "content": text}]])
    return edits


def bound_results(messages: list[Message], start: int, limit: int) -> list[Edit]:
    """Edits that keep the head and tail of each tool result from `start` on that is longer than `limit`
    characters, with a note saying how to read the rest: no result is ever sent larger than that."""
    edits: list[Edit] = []
    for index in range(start, len(messages)):
        message = messages[index]
        content = message.get("content")
        if message["role"] != "tool" or not isinstance(content, str) or len(content) <= limit:
            continue
        keep = max(200, (limit - len(prompts.BOUNDED_RESULT)) // 2)
        note = prompts.BOUNDED_RESULT.format(cut=len(content) - 2 * keep, lines=content.count("\n") + 1)
        edits.append([index, index + 1, [{**message, "content": content[:keep] + note + content[-keep:]}]])
    return edits


def useless_summary(summary: Any) -> str:
    """Why a summary cannot stand in for the turns it replaces, or "" if it can."""
    if not isinstance(summary, str) or not summary.strip():
        return "it was empty"
    if summary.strip().startswith(prompts.MARKER) and len(summary.strip()) < SUMMARY_FLOOR * 2:
        return "it was the completion marker"
    if len(summary.strip()) < SUMMARY_FLOOR:
        return f"it was {len(summary.strip())} characters, under {SUMMARY_FLOOR}"
    return ""


def summarisable(messages: list[Message], end: int, pinned: list[Message]) -> list[Message]:
    """The messages between the system prompt and `end` that a summary may replace."""
    return [m for m in messages[1:end] if not any(m is p for p in pinned)]


def summary_edit(messages: list[Message], end: int, pinned: list[Message], summary: str) -> Edit:
    """Replaces what is before `end` with the pinned messages (the goal) and the summary."""
    kept = [m for m in messages[1:end] if any(m is p for p in pinned)]
    return [1, end, [*kept, {"role": "user", "content": prompts.SUMMARY.format(summary=summary.strip())}]]


def render(messages: list[Message], limit: int) -> str:
    """The turns to summarise as plain text, at most `limit` characters (the middle cut)."""
    parts = []
    for message in messages:
        role, content = message["role"], message.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if role == "tool":
            parts.append(f"[result of {message.get('tool_call_id')}]\n{clip(text, RENDER_RESULT)}")
            continue
        calls = [
            f"[call {c['id']}: {c['function']['name']} {clip(c['function']['arguments'], 500)}]"
            for c in message.get("tool_calls") or ()
        ]
        parts.append("\n".join([f"[{role}]", text, *calls]).strip())
    return clip("\n\n".join(parts), limit)


def fallback_summary(messages: list[Message], reason: str) -> str:
    """What replaces older turns when no summary can be had: the calls they made."""
    calls = [
        f"- {c['function']['name']} {clip(c['function']['arguments'], 200)}"
        for m in messages
        for c in m.get("tool_calls") or ()
    ]
    return prompts.SUMMARY_FALLBACK.format(reason=reason, calls="\n".join(calls[-40:]) or "(none)")


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = max(0, limit // 2 - 40)
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
