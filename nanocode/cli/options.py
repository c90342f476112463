"""The options of a goal: every one can also be set by an environment variable (shown in --help)."""

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _option(*names: str, envvar: str, **kwargs: Any) -> Callable[[F], F]:
    """Every option can be set by an environment variable; --help shows both, and the default."""
    kwargs.setdefault("show_default", "default" in kwargs)
    return click.option(*names, envvar=envvar, show_envvar=True, **kwargs)


# Paths stay strings here (pathlib costs start-up time); Settings makes them Paths.
PATH = click.Path(file_okay=False)
FILE = click.Path(dir_okay=False)

# In the order --help lists them.
GOAL_OPTIONS = [
    _option("--model", envvar="MODEL_NAME", default="anthropic/claude-sonnet-4-6", help="Model name."),
    _option(
        "--base-url",
        envvar="INFERENCE_BASE_URL",
        default="https://openrouter.ai/api/v1",
        help="OpenAI-compatible API base URL.",
    ),
    _option("--api-key", envvar="OPENROUTER_API_KEY", help="API key (required unless --replay)."),
    _option(
        "--project",
        envvar="NANOCODE_PROJECT",
        type=PATH,
        help="Project directory the tools work in.  [default: current directory]",
    ),
    _option(
        "--sandbox/--no-sandbox",
        envvar="NANOCODE_SANDBOX",
        default=False,
        help="Run every tool call in a disposable Docker container.",
    ),
    _option(
        "--workspace",
        envvar="NANOCODE_WORKSPACE",
        type=click.Choice(["bind", "overlay"]),
        default="bind",
        help="How the sandbox shares the project: bind (live, .git read-only) or overlay (a private layer; "
        "the project changes when its change set is applied).",
    ),
    _option(
        "--apply",
        "apply_changes",
        envvar="NANOCODE_APPLY",
        is_flag=True,
        help="With -p and --workspace overlay: apply the change set when the goal completes.",
    ),
    _option("--image", envvar="NANOCODE_IMAGE", help="Sandbox image to use instead of the built-in one."),
    _option("--memory", envvar="NANOCODE_MEMORY", default="2g", help="Sandbox memory limit (swap is the same)."),
    _option("--cpus", envvar="NANOCODE_CPUS", type=click.FloatRange(min=0.01), default=2.0, help="Sandbox CPU limit."),
    _option("--pids", envvar="NANOCODE_PIDS", type=click.IntRange(min=16), default=512, help="Sandbox process limit."),
    _option(
        "--network",
        envvar="NANOCODE_NETWORK",
        default="none",
        help="Sandbox network: none, bridge, or a Docker network name.",
    ),
    _option(
        "--command-timeout",
        envvar="NANOCODE_COMMAND_TIMEOUT",
        type=click.FloatRange(min=0.1),
        default=120.0,
        help="Seconds before a command, and everything it started, is killed.",
    ),
    _option(
        "--output-cap",
        envvar="NANOCODE_OUTPUT_CAP",
        type=click.IntRange(min=1000),
        default=50000,
        help="Bytes of output kept per stream (head and tail).",
    ),
    _option(
        "--max-steps",
        envvar="NANOCODE_MAX_STEPS",
        type=click.IntRange(min=1),
        default=100,
        help="Model calls per goal.",
    ),
    _option(
        "--max-continuations",
        envvar="NANOCODE_MAX_CONTINUATIONS",
        type=click.IntRange(min=0),
        default=10,
        help="Re-prompts per goal when the model stops before the goal is complete.",
    ),
    _option(
        "--max-time",
        envvar="NANOCODE_MAX_TIME",
        type=click.FloatRange(min=1),
        default=3600.0,
        help="Wall-clock seconds per goal.",
    ),
    _option(
        "--max-cost",
        envvar="NANOCODE_MAX_COST",
        type=click.FloatRange(min=0),
        default=5.0,
        help="Dollars per goal, summed from usage.cost where the endpoint reports it (0: no limit).",
    ),
    _option(
        "--max-tokens",
        envvar="NANOCODE_MAX_TOKENS",
        type=click.IntRange(min=1),
        default=8192,
        help="max_tokens of each model reply.",
    ),
    _option(
        "--request-timeout",
        envvar="NANOCODE_REQUEST_TIMEOUT",
        type=click.FloatRange(min=1),
        default=300.0,
        help="Seconds to wait for one model reply.",
    ),
    _option(
        "--retries",
        envvar="NANOCODE_RETRIES",
        type=click.IntRange(min=0),
        default=5,
        help="Retries of a failed model request (connection errors, timeouts, 408, 429, 5xx).",
    ),
    _option(
        "--transcript",
        envvar="NANOCODE_TRANSCRIPT",
        type=FILE,
        help="JSON Lines transcript.  [default: ~/.local/state/nanocode/runs/]",
    ),
    _option(
        "--replay",
        envvar="NANOCODE_REPLAY",
        type=click.Path(dir_okay=False, exists=True),
        help="Answer with the model replies recorded in a transcript (no key needed).",
    ),
    _option("-q", "--quiet", envvar="NANOCODE_QUIET", is_flag=True, help="Print only the final answer."),
]


def goal_options(function: F) -> F:
    """Puts the options of a goal on a command: the root command, and others that run goals."""
    for option in reversed(GOAL_OPTIONS):
        function = option(function)
    return function
