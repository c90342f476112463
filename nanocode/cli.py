"""The command line: `nanocode` (REPL), `nanocode -p GOAL`, and `nanocode sandbox ...`."""

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from nanocode import __version__
from nanocode.display import printable
from nanocode.errors import EXIT_COMPLETE, EXIT_INTERNAL, ConfigError, Interrupted


def _env_file() -> None:
    # The real environment wins over .env, and the command line wins over both.
    from dotenv import find_dotenv, load_dotenv

    path = find_dotenv(usecwd=True)
    if path:
        try:
            load_dotenv(path, override=False, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None


F = TypeVar("F", bound=Callable[..., Any])


def _option(*names: str, envvar: str, **kwargs: Any) -> Callable[[F], F]:
    """Every option can be set by an environment variable; --help shows both, and the default."""
    kwargs.setdefault("show_default", "default" in kwargs)
    return click.option(*names, envvar=envvar, show_envvar=True, **kwargs)


# Paths stay strings here (pathlib costs start-up time); Settings makes them Paths.
PATH = click.Path(file_okay=False)
FILE = click.Path(dir_okay=False)


@click.group(
    invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "-p", "--prompt", "goal", metavar="GOAL", help="Run one goal unattended and exit ('-' reads it from stdin)."
)
@_option("--model", envvar="MODEL_NAME", default="anthropic/claude-sonnet-4-6", help="Model name.")
@_option(
    "--base-url",
    envvar="INFERENCE_BASE_URL",
    default="https://openrouter.ai/api/v1",
    help="OpenAI-compatible API base URL.",
)
@_option("--api-key", envvar="OPENROUTER_API_KEY", help="API key (required unless --replay).")
@_option(
    "--project",
    envvar="NANOCODE_PROJECT",
    type=PATH,
    help="Project directory the tools work in.  [default: current directory]",
)
@_option(
    "--sandbox/--no-sandbox",
    envvar="NANOCODE_SANDBOX",
    default=False,
    help="Run every tool call in a disposable Docker container.",
)
@_option("--image", envvar="NANOCODE_IMAGE", help="Sandbox image to use instead of the built-in one.")
@_option("--memory", envvar="NANOCODE_MEMORY", default="2g", help="Sandbox memory limit (swap is the same).")
@_option("--cpus", envvar="NANOCODE_CPUS", type=click.FloatRange(min=0.01), default=2.0, help="Sandbox CPU limit.")
@_option("--pids", envvar="NANOCODE_PIDS", type=click.IntRange(min=16), default=512, help="Sandbox process limit.")
@_option(
    "--network",
    envvar="NANOCODE_NETWORK",
    default="none",
    help="Sandbox network: none, bridge, or a Docker network name.",
)
@_option(
    "--command-timeout",
    envvar="NANOCODE_COMMAND_TIMEOUT",
    type=click.FloatRange(min=0.1),
    default=120.0,
    help="Seconds before a command, and everything it started, is killed.",
)
@_option(
    "--output-cap",
    envvar="NANOCODE_OUTPUT_CAP",
    type=click.IntRange(min=1000),
    default=50000,
    help="Bytes of output kept per stream (head and tail).",
)
@_option(
    "--max-steps", envvar="NANOCODE_MAX_STEPS", type=click.IntRange(min=1), default=100, help="Model calls per goal."
)
@_option(
    "--max-continuations",
    envvar="NANOCODE_MAX_CONTINUATIONS",
    type=click.IntRange(min=0),
    default=10,
    help="Re-prompts per goal when the model stops before the goal is complete.",
)
@_option(
    "--max-time",
    envvar="NANOCODE_MAX_TIME",
    type=click.FloatRange(min=1),
    default=3600.0,
    help="Wall-clock seconds per goal.",
)
@_option(
    "--max-cost",
    envvar="NANOCODE_MAX_COST",
    type=click.FloatRange(min=0),
    default=5.0,
    help="Dollars per goal, summed from usage.cost where the endpoint reports it (0: no limit).",
)
@_option(
    "--max-tokens",
    envvar="NANOCODE_MAX_TOKENS",
    type=click.IntRange(min=1),
    default=8192,
    help="max_tokens of each model reply.",
)
@_option(
    "--request-timeout",
    envvar="NANOCODE_REQUEST_TIMEOUT",
    type=click.FloatRange(min=1),
    default=300.0,
    help="Seconds to wait for one model reply.",
)
@_option(
    "--retries",
    envvar="NANOCODE_RETRIES",
    type=click.IntRange(min=0),
    default=5,
    help="Retries of a failed model request (connection errors, timeouts, 408, 429, 5xx).",
)
@_option(
    "--transcript",
    envvar="NANOCODE_TRANSCRIPT",
    type=FILE,
    help="JSON Lines transcript.  [default: ~/.local/state/nanocode/runs/]",
)
@_option(
    "--replay",
    envvar="NANOCODE_REPLAY",
    type=click.Path(dir_okay=False, exists=True),
    help="Answer with the model replies recorded in a transcript (no key needed).",
)
@_option("-q", "--quiet", envvar="NANOCODE_QUIET", is_flag=True, help="Print only the final answer.")
@click.version_option(__version__, "--version")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """nanocode: give it a goal; it works with shell, read_file and write_file until the goal is done.

    Without -p, each line you type is a goal; an empty line or Ctrl-D quits.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = options
        return
    # Imported here, so that --help and the sandbox commands start fast.
    from nanocode.session import Session, Settings

    settings = Settings.from_options(options)
    goal = options["goal"]
    if goal == "-":
        goal = sys.stdin.buffer.read().decode("utf-8", "replace")
    if goal is not None and not goal.strip():
        raise ConfigError("the goal is empty")
    with Session(settings) as session:
        if goal is not None:
            answer = session.run_goal(goal)
            click.echo(printable(answer))
            ctx.exit(EXIT_COMPLETE)
        session.repl()


@cli.group()
def sandbox() -> None:
    """Manage the sandbox image and containers."""


@sandbox.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the image is up to date.")
def sandbox_build(force: bool) -> None:
    """Build the sandbox image (done on first use otherwise)."""
    from nanocode.sandbox import engine, image

    tag = image.ensure_image(engine.connect(), lambda line: click.echo(line, err=True), force=force)
    click.echo(tag)


@sandbox.command("ls")
def sandbox_ls() -> None:
    """List nanocode's containers, and whether their owner is gone."""
    from nanocode.sandbox import container, engine

    rows = container.ours(engine.connect())
    if not rows:
        click.echo("no nanocode containers", err=True)
        return
    click.echo(f"{'NAME':22} {'STATUS':10} {'OWNER':24} {'STARTED':26} {'PROJECT':30} STALE")
    for item in rows:
        labels = item.labels
        owner = f"{labels.get('nanocode.owner.pid', '?')}@{labels.get('nanocode.owner.host', '?')}"
        started, project = labels.get("nanocode.started", "?"), labels.get("nanocode.project", "?")
        stale = "yes" if container.is_stale(item) else "no"
        click.echo(f"{item.name:22} {item.status:10} {owner:24} {started:26} {project:30} {stale}")


@sandbox.command("prune")
def sandbox_prune() -> None:
    """Remove the containers whose nanocode process is gone."""
    from nanocode.sandbox import container, engine

    removed = container.prune(engine.connect())
    for name in removed:
        click.echo(name)
    click.echo(f"removed {len(removed)} stale container(s)", err=True)


def main() -> None:
    try:
        if not {"-h", "--help", "--version"} & set(sys.argv[1:]):
            _env_file()
        cli.main(prog_name="nanocode", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("nanocode: interrupted", err=True)
        sys.exit(Interrupted.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("nanocode: interrupted", err=True)
        sys.exit(Interrupted.exit_code)
    except Exception as exc:
        if os.environ.get("NANOCODE_DEBUG"):
            raise
        click.echo(
            f"nanocode: internal error: {type(exc).__name__}: {exc} (NANOCODE_DEBUG=1 shows the traceback)", err=True
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
