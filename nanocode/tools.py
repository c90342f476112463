"""The tools the model can call. To add one, add a Tool to TOOLS: schema and handler together."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nanocode.errors import FileOpError
from nanocode.interfaces import CommandResult, Executor, Watch


@dataclass
class ToolContext:
    executor: Executor
    command_timeout: float
    watch: Watch | None = None  # shown a running command's latest output


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: Callable[[ToolContext, dict[str, Any]], str]
    optional: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": self.parameters,
                    "required": [name for name in self.parameters if name not in self.optional],
                },
            },
        }


def format_command(result: CommandResult, timeout: float) -> str:
    if result.exit_code == 0 and not result.timed_out and not result.killed:
        text = result.stdout
        if result.stderr.strip():
            text += ("\n" if text and not text.endswith("\n") else "") + "[stderr]\n" + result.stderr
        return text if text.strip() else "(no output)"
    if result.timed_out:
        reason = f"stopped after {timeout:g}s (timeout): the command and every process it started were killed"
    elif result.killed:
        reason = f"killed: {result.killed}"
    elif result.signal is not None:
        reason = f"killed by signal {result.signal}"
    elif result.exit_code is None:
        reason = "the command did not run"
    else:
        reason = f"exit code {result.exit_code}"
    parts = [f"ERROR: {reason}", result.stderr.rstrip("\n"), result.stdout.rstrip("\n")]
    return "\n".join(part for part in parts if part)


def _shell(ctx: ToolContext, args: dict[str, Any]) -> str:
    command = _text(args, "command")
    return format_command(ctx.executor.run(command, ctx.command_timeout, ctx.watch), ctx.command_timeout)


def _read_file(ctx: ToolContext, args: dict[str, Any]) -> str:
    path = _text(args, "path")
    if args.get("start_line") is None and args.get("end_line") is None:
        return ctx.executor.read_file(path)
    first = _line(args, "start_line", 1)
    last = _line(args, "end_line", first + 999)
    if last < first:
        raise ToolArgumentError("'end_line' must not be before 'start_line'")
    return ctx.executor.read_file(path, (first, last))


def _line(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolArgumentError(f"'{name}' must be a line number, counted from 1")
    return value


def _write_file(ctx: ToolContext, args: dict[str, Any]) -> str:
    path = _text(args, "path")
    content = args.get("content")
    if not isinstance(content, str):
        raise ToolArgumentError("'content' must be a string")
    ctx.executor.write_file(path, content)
    return f"wrote {path}"


TOOLS = [
    Tool(
        "shell",
        "Run a bash command in the project directory and return its output.",
        {"command": {"type": "string", "description": "The command line to run."}},
        _shell,
    ),
    Tool(
        "read_file",
        "Return the contents of a text file; for a large one, give start_line and end_line to read it in parts.",
        {
            "path": {"type": "string", "description": "Path, relative to the project directory."},
            "start_line": {"type": "integer", "description": "First line to return, counted from 1 (optional)."},
            "end_line": {"type": "integer", "description": "Last line to return, included (optional)."},
        },
        _read_file,
        optional=("start_line", "end_line"),
    ),
    Tool(
        "write_file",
        "Create or overwrite a file with the given content; parent folders are created.",
        {
            "path": {"type": "string", "description": "Path, relative to the project directory."},
            "content": {"type": "string", "description": "The whole new content of the file."},
        },
        _write_file,
    ),
]
BY_NAME = {tool.name: tool for tool in TOOLS}


class ToolArgumentError(Exception):
    pass


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolArgumentError(f"'{name}' must be a non-empty string")
    return value


def parse_arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        args = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ToolArgumentError(f"arguments are not valid JSON ({exc}); send a JSON object") from exc
    if not isinstance(args, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    return args


def call_tool(ctx: ToolContext, name: Any, raw_arguments: Any) -> str:
    """Runs one tool call; whatever the model sent, the answer is a string it can act on."""
    tool = BY_NAME.get(name) if isinstance(name, str) else None
    if tool is None:
        return f"ERROR: unknown tool {name!r}; the tools are: {', '.join(BY_NAME)}"
    try:
        return tool.handler(ctx, parse_arguments(raw_arguments))
    except ToolArgumentError as exc:
        return f"ERROR: {name}: {exc}"
    except FileOpError as exc:
        return f"ERROR: {exc}"
