"""The command line. app.py is the root command; each command group is a module of its own."""

import os
import sys

import click

from nanocode.cli.app import cli
from nanocode.errors import EXIT_INTERNAL, ConfigError, Interrupted, internal

__all__ = ["cli", "main"]


def _env_file() -> None:
    # The real environment wins over .env, and the command line wins over both.
    from dotenv import find_dotenv, load_dotenv

    path = find_dotenv(usecwd=True)
    if path:
        try:
            load_dotenv(path, override=False, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None


def main() -> None:
    try:
        if not {"-h", "--help", "--version"} & set(sys.argv[1:]):
            _env_file()
        # Without standalone mode, click hands back the code of a ctx.exit() instead of exiting.
        code = cli.main(prog_name="nanocode", standalone_mode=False)
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
        click.echo(f"nanocode: {internal(exc)}", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
