"""What a batch leaves in --out: per goal a folder with result.json, its transcript and change set;
for the batch summary.json. A goal with a final result is not run again."""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nanocode.errors import EXIT_BUDGET, EXIT_COMPLETE, EXIT_CONFIG, EXIT_ENDPOINT, EXIT_INTERNAL

# How a goal ended, and what that makes of the batch's exit code: the worst wins.
EXIT = {
    "complete": EXIT_COMPLETE,
    "budget": EXIT_BUDGET,
    "stopped": EXIT_BUDGET,  # ended, or never started, by a budget of the batch
    "endpoint": EXIT_ENDPOINT,
    "config": EXIT_CONFIG,
    "engine": EXIT_CONFIG,
    "crash": EXIT_INTERNAL,
}
SEVERITY = [EXIT_COMPLETE, EXIT_BUDGET, EXIT_ENDPOINT, EXIT_CONFIG, EXIT_INTERNAL]
FINAL = {"complete", "budget", "endpoint", "config", "engine", "crash"}  # "stopped" and "interrupted" run again
RETRIED = {"endpoint", "engine", "crash"}  # with --retry-failed


@dataclass
class Result:
    id: str
    goal: str
    project: str
    outcome: str  # complete, budget, stopped, endpoint, config, engine, crash, interrupted
    reason: str = ""
    answer: str = ""
    steps: int = 0
    continuations: int = 0
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    ready_seconds: float | None = None  # from the goal's start to its sandbox ready for a tool call
    model_seconds: float = 0.0
    files_changed: list[str] = field(default_factory=list)
    change_set: str = ""  # its id: `nanocode diff ID`, `nanocode apply ID`
    engine: str = ""
    applied: bool = False


CHANGES = "changes"  # a goal's change set, in its results folder


def folder(out: Path, goal_id: str) -> Path:
    return out / goal_id


def write(out: Path, result: Result) -> None:
    """Written to a temporary name and renamed: a result.json is always whole."""
    path = folder(out, result.id) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(result), indent=1) + "\n")
    os.replace(temporary, path)


def read(out: Path, goal_id: str) -> Result | None:
    try:
        data = json.loads((folder(out, goal_id) / "result.json").read_text())
        return Result(**{k: v for k, v in data.items() if k in Result.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def stamp(out: Path, goal_id: str) -> tuple[int, int] | None:
    """Which file the goal's result.json is (device, inode), or None: write() puts a new one in place."""
    try:
        found = (folder(out, goal_id) / "result.json").stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def read_all(out: Path) -> list[Result]:
    found = (read(out, p.name) for p in sorted(out.iterdir()) if p.is_dir()) if out.is_dir() else iter(())
    return [r for r in found if r is not None]


def is_done(result: Result | None, retry_failed: bool) -> bool:
    if result is None or result.outcome not in FINAL:
        return False
    return not (retry_failed and result.outcome in RETRIED)


def exit_code(outcomes: list[str]) -> int:
    codes = [EXIT.get(o, EXIT_INTERNAL) for o in outcomes]
    return max(codes, key=SEVERITY.index, default=EXIT_COMPLETE)


def summary(results: list[Result], seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return {
        "goals": len(results),
        "outcomes": counts,
        "cost": round(sum(r.cost for r in results), 6),
        "seconds": round(seconds, 3),
        "exit_code": exit_code([r.outcome for r in results]),
        **extra,
        "results": [asdict(r) for r in results],
    }


def table(results: list[Result]) -> str:
    rows = [("id", "outcome", "steps", "cost", "seconds", "files", "reason")]
    for r in results:
        reason = " ".join(r.reason.split())
        rows.append(
            (
                r.id,
                r.outcome,
                str(r.steps),
                f"${r.cost:.4f}",
                f"{r.seconds:.1f}",
                str(len(r.files_changed)),
                reason[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows)
