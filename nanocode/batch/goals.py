"""The goals file: JSON Lines or YAML, each entry a goal with an optional id, project and option overrides."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nanocode.errors import ConfigError

# The options a goal may set for itself; the key and the command line stay with the batch.
OVERRIDABLE = {
    "model",
    "base_url",
    "project",
    "image",
    "memory",
    "cpus",
    "pids",
    "network",
    "command_timeout",
    "output_cap",
    "max_steps",
    "max_continuations",
    "max_time",
    "max_cost",
    "max_tokens",
    "request_timeout",
    "retries",
}
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Convert = Callable[[str, Any], Any]


@dataclass
class Goal:
    id: str
    text: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse(text: str, source: str, convert: Convert) -> list[Goal]:
    """The goals in a file's text; every mistake is one line naming the entry."""
    stripped = text.lstrip()
    entries = _json_lines(text, source) if stripped.startswith("{") else _yaml(text, source)
    goals = [_goal(entry, index, source, convert) for index, entry in entries]
    return unique(goals, source)


def from_texts(texts: list[str]) -> list[Goal]:
    return unique([Goal(f"{n:03d}", text.strip()) for n, text in enumerate(texts, 1) if text.strip()], "--goal")


def unique(goals: list[Goal], source: str) -> list[Goal]:
    if not goals:
        raise ConfigError(f"{source} holds no goals")
    seen: set[str] = set()
    for goal in goals:
        if goal.id in seen:
            raise ConfigError(f"{source}: the id {goal.id!r} is given to more than one goal")
        seen.add(goal.id)
    return goals


def _json_lines(text: str, source: str) -> list[tuple[int, Any]]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append((number, json.loads(line)))
        except ValueError as exc:
            raise ConfigError(f"{source} line {number} is not JSON: {exc}") from None
    return entries


def _yaml(text: str, source: str) -> list[tuple[int, Any]]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is neither JSON Lines nor YAML: {' '.join(str(exc).split())}") from None
    if isinstance(data, dict) and "goals" in data:
        data = data["goals"]
    if not isinstance(data, list):
        raise ConfigError(f"{source}: YAML goals are a list (or a mapping with a 'goals' list)")
    return list(enumerate(data, 1))


def _goal(entry: Any, index: int, source: str, convert: Convert) -> Goal:
    where = f"{source} entry {index}"
    if isinstance(entry, str):
        entry = {"goal": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a goal: give a mapping with 'goal' (or a string)")
    entry = {str(key).replace("-", "_"): value for key, value in entry.items()}
    text = entry.pop("goal", None)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where} has no goal text ('goal')")
    goal_id = str(entry.pop("id", f"{index:03d}"))
    if not ID.fullmatch(goal_id):  # whole: `$` would let a trailing newline through
        raise ConfigError(f"{where}: the id {goal_id!r} must be letters, digits, '.', '_' or '-' (64 at most)")
    unknown = sorted(set(entry) - OVERRIDABLE)
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(unknown)} cannot be set per goal (allowed: {', '.join(sorted(OVERRIDABLE))})"
        )
    try:
        overrides = {name: convert(name, value) for name, value in entry.items()}
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None
    return Goal(goal_id, text.strip(), overrides)
