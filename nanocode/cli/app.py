"""The root command: `nanocode` (REPL) and `nanocode -p GOAL`; the command groups hang off it."""

import sys
from typing import Any

import click

from nanocode import __version__
from nanocode.cli.batch import batch
from nanocode.cli.changes import apply_command, changes, diff, discard
from nanocode.cli.options import goal_options
from nanocode.cli.sandbox import sandbox
from nanocode.display import printable
from nanocode.errors import EXIT_COMPLETE, ConfigError


@click.group(
    invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "-p", "--prompt", "goal", metavar="GOAL", help="Run one goal unattended and exit ('-' reads it from stdin)."
)
@goal_options
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
    from nanocode import repl
    from nanocode.session import Session
    from nanocode.settings import Settings

    goal = options["goal"]
    if goal is not None and options["resume"]:
        raise ConfigError("--resume carries on with the goal its transcript holds: give no -p with it")
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given = {name for name in options if ctx.get_parameter_source(name) in sources}
    settings = Settings.from_options(options, given)
    if goal == "-":
        goal = sys.stdin.buffer.read().decode("utf-8", "replace")
    if goal is not None and not goal.strip():
        raise ConfigError("the goal is empty")
    with Session(settings) as session:
        if goal is not None or settings.resume:
            answer = session.run_goal(goal)
            click.echo(printable(answer))
            ctx.exit(EXIT_COMPLETE)
        repl.run(session)


cli.add_command(sandbox)
for command in (changes, diff, apply_command, discard):
    cli.add_command(command)
cli.add_command(batch)
