"""The options of a goal: every one can also be set by an environment variable (shown in --help)."""

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def env_option(*names: str, envvar: str, **kwargs: Any) -> Callable[[F], F]:
    """Every option can be set by an environment variable; --help shows both, and the default."""
    kwargs.setdefault("show_default", "default" in kwargs)
    return click.option(*names, envvar=envvar, show_envvar=True, **kwargs)


class _Lines(click.types.StringParamType):
    """A string; several in one environment variable go one a line (a command may hold spaces)."""

    name = "text"
    envvar_list_splitter = "\n"


# Paths stay strings here (pathlib costs start-up time); Settings makes them Paths.
PATH = click.Path(file_okay=False)
FILE = click.Path(dir_okay=False)

# In the order --help lists them.
GOAL_OPTIONS = [
    env_option("--model", envvar="MODEL_NAME", default="anthropic/claude-sonnet-4-6", help="Model name."),
    env_option(
        "--base-url",
        envvar="INFERENCE_BASE_URL",
        default="https://openrouter.ai/api/v1",
        help="OpenAI-compatible API base URL.",
    ),
    env_option("--api-key", envvar="OPENROUTER_API_KEY", help="API key (required unless --replay)."),
    env_option(
        "--project",
        envvar="NANOCODE_PROJECT",
        type=PATH,
        help="Project directory the tools work in.  [default: current directory]",
    ),
    env_option(
        "--sandbox/--no-sandbox",
        envvar="NANOCODE_SANDBOX",
        default=False,
        help="Run every tool call in a disposable Docker container.",
    ),
    env_option(
        "--workspace",
        envvar="NANOCODE_WORKSPACE",
        type=click.Choice(["bind", "overlay"]),
        default="bind",
        help="How the sandbox shares the project: bind (live, .git read-only) or overlay (a private layer; "
        "the project changes when its change set is applied).",
    ),
    env_option(
        "--apply",
        "apply_changes",
        envvar="NANOCODE_APPLY",
        is_flag=True,
        help="With -p and --workspace overlay: apply the change set when the goal completes.",
    ),
    env_option("--image", envvar="NANOCODE_IMAGE", help="Sandbox image to use instead of the built-in one."),
    env_option("--memory", envvar="NANOCODE_MEMORY", default="2g", help="Sandbox memory limit (swap is the same)."),
    env_option(
        "--cpus", envvar="NANOCODE_CPUS", type=click.FloatRange(min=0.01), default=2.0, help="Sandbox CPU limit."
    ),
    env_option(
        "--pids", envvar="NANOCODE_PIDS", type=click.IntRange(min=16), default=512, help="Sandbox process limit."
    ),
    env_option(
        "--network",
        envvar="NANOCODE_NETWORK",
        default="none",
        help="Sandbox network: none, bridge, or a Docker network name (with --allow-host: the proxy's way out).",
    ),
    env_option(
        "--allow-host",
        "allow_hosts",
        envvar="NANOCODE_ALLOW_HOSTS",
        multiple=True,
        metavar="HOST",
        help="Let the sandbox reach only this host, through a proxy: a name, *.domain, * (any name at a public "
        "address), an IP address or CIDR block (private ones too), each with :port or not, or a preset "
        "(@python, @npm, @debian, @github). Repeatable; the variable takes a comma-separated list.",
    ),
    env_option(
        "--host-ca/--no-host-ca",
        envvar="NANOCODE_HOST_CA",
        default=True,
        help="Trust the host's CA bundle inside a sandbox with a network.",
    ),
    env_option(
        "--writable-root/--read-only-root",
        envvar="NANOCODE_WRITABLE_ROOT",
        default=None,
        help="Let the sandbox write its own root filesystem (thrown away with it), so `apt-get install` "
        "works; capabilities stay dropped.  [default: writable with --allow-host @debian, read-only otherwise]",
    ),
    env_option(
        "--runtime",
        envvar="NANOCODE_RUNTIME",
        help="The engine's OCI runtime for the sandbox (runsc for gVisor).  [default: the engine's]",
    ),
    env_option(
        "--require-isolation",
        envvar="NANOCODE_REQUIRE_ISOLATION",
        type=click.Choice(["gvisor", "rootless", "limits"]),
        multiple=True,
        help="Refuse a goal whose sandbox is not this (repeatable): gvisor, rootless, limits enforced.",
    ),
    env_option(
        "--require-limits",
        envvar="NANOCODE_REQUIRE_LIMITS",
        is_flag=True,
        help="Refuse an engine that would not enforce the memory, CPU and process limits.",
    ),
    env_option(
        "--command-timeout",
        envvar="NANOCODE_COMMAND_TIMEOUT",
        type=click.FloatRange(min=0.1),
        default=120.0,
        help="Seconds before a command, and everything it started, is killed.",
    ),
    env_option(
        "--output-cap",
        envvar="NANOCODE_OUTPUT_CAP",
        type=click.IntRange(min=1000),
        default=50000,
        help="Bytes of output kept per stream (head and tail).",
    ),
    env_option(
        "--max-steps",
        envvar="NANOCODE_MAX_STEPS",
        type=click.IntRange(min=1),
        default=100,
        help="Model calls per goal.",
    ),
    env_option(
        "--max-continuations",
        envvar="NANOCODE_MAX_CONTINUATIONS",
        type=click.IntRange(min=0),
        default=10,
        help="Re-prompts per goal when the model stops before the goal is complete.",
    ),
    env_option(
        "--max-time",
        envvar="NANOCODE_MAX_TIME",
        type=click.FloatRange(min=1),
        default=3600.0,
        help="Wall-clock seconds per goal.",
    ),
    env_option(
        "--max-cost",
        envvar="NANOCODE_MAX_COST",
        type=click.FloatRange(min=0),
        default=5.0,
        help="Dollars per goal, summed from usage.cost where the endpoint reports it (0: no limit).",
    ),
    env_option(
        "--max-tokens",
        envvar="NANOCODE_MAX_TOKENS",
        type=click.IntRange(min=1),
        default=8192,
        help="max_tokens of each model reply.",
    ),
    env_option(
        "--request-timeout",
        envvar="NANOCODE_REQUEST_TIMEOUT",
        type=click.FloatRange(min=1),
        default=300.0,
        help="Seconds to wait for one model reply.",
    ),
    env_option(
        "--retries",
        envvar="NANOCODE_RETRIES",
        type=click.IntRange(min=0),
        default=5,
        help="Retries of a failed model request (connection errors, timeouts, 408, 429, 5xx).",
    ),
    env_option(
        "--transcript",
        envvar="NANOCODE_TRANSCRIPT",
        type=FILE,
        help="JSON Lines transcript.  [default: ~/.local/state/nanocode/runs/]",
    ),
    env_option(
        "--replay",
        envvar="NANOCODE_REPLAY",
        type=click.Path(dir_okay=False, exists=True),
        help="Answer with the model replies recorded in a transcript (no key needed).",
    ),
    env_option("-q", "--quiet", envvar="NANOCODE_QUIET", is_flag=True, help="Print only the final answer."),
    env_option(
        "--context-window",
        envvar="NANOCODE_CONTEXT_WINDOW",
        type=click.IntRange(min=1000),
        help="The model's context window in tokens.  [default: from the endpoint's model listing, else 128000]",
    ),
    env_option(
        "--compact-threshold",
        envvar="NANOCODE_COMPACT_THRESHOLD",
        type=click.FloatRange(min=0.1, max=1.0),
        default=0.8,
        help="Compact the conversation when it is estimated past this fraction of the window.",
    ),
    env_option(
        "--compact-model",
        envvar="NANOCODE_COMPACT_MODEL",
        help="Model that writes the summary when the conversation is compacted.  [default: --model]",
    ),
    env_option(
        "--prompt-cache/--no-prompt-cache",
        envvar="NANOCODE_PROMPT_CACHE",
        default=True,
        help="Mark the system prompt and the newest message for the prompt cache (Anthropic's models).",
    ),
    env_option(
        "--instructions/--no-instructions",
        envvar="NANOCODE_INSTRUCTIONS",
        default=True,
        help="Put the project's AGENTS.md files in the system prompt.",
    ),
    env_option(
        "--check",
        "checks",
        envvar="NANOCODE_CHECK",
        type=_Lines(),
        multiple=True,
        help="A command that must exit 0 before the goal is complete; repeatable (one a line in the variable).",
    ),
    env_option(
        "--repeat-note",
        envvar="NANOCODE_REPEAT_NOTE",
        type=click.IntRange(min=2),
        default=3,
        help="Tell the model when it made the same tool call with the same result this many times in a row.",
    ),
    env_option(
        "--max-repeats",
        envvar="NANOCODE_MAX_REPEATS",
        type=click.IntRange(min=2),
        default=6,
        help="End the goal (no progress) when the same tool call gives the same result this many times in a row.",
    ),
    env_option(
        "--resume",
        envvar="NANOCODE_RESUME",
        is_flag=False,
        flag_value="last",
        metavar="[RUN]",
        help="Carry on with the last goal of a run: a transcript, or `last` (the newest run). The run's "
        "isolation (sandbox, workspace, network, allowlist, image, runtime, limits) is restored unless given.",
    ),
    env_option(
        "--resume-less-isolated",
        envvar="NANOCODE_RESUME_LESS_ISOLATED",
        is_flag=True,
        help="Let --resume go on with less isolation than the run had (no sandbox, a wider network, higher limits).",
    ),
]


def goal_options(function: F) -> F:
    """Puts the options of a goal on a command: the root command, and others that run goals."""
    for option in reversed(GOAL_OPTIONS):
        function = option(function)
    return function
