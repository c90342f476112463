"""`nanocode sandbox ...`: the sandbox image and containers."""

from pathlib import Path
from typing import Any

import click


@click.group()
def sandbox() -> None:
    """Manage the sandbox image and containers."""


@sandbox.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the image is up to date.")
@click.option(
    "--file",
    "dockerfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Build this Dockerfile of yours instead (its folder is the context; ARG SANDBOX names nanocode's image).",
)
@click.option("--tag", help="With --file: the tag of the image built.  [default: nanocode-custom]")
@click.option(
    "--host-ca/--no-host-ca",
    envvar="NANOCODE_HOST_CA",
    default=True,
    help="The build's steps trust the host's CA bundle (behind a TLS-inspecting proxy); the image made does not.",
)
def sandbox_build(force: bool, dockerfile: Path | None, tag: str | None, host_ca: bool) -> None:
    """Build the sandbox image (done on first use otherwise), or an image of yours on top of it."""
    from nanocode.egress import trust
    from nanocode.sandbox import engine, image

    progress = lambda line: click.echo(line, err=True)  # noqa: E731
    client = engine.connect()
    bundle = trust.host_bundle() if host_ca else None
    if dockerfile is None:
        click.echo(image.ensure_image(client, progress, force=force, bundle=bundle))
        return
    click.echo(image.build_custom(client, dockerfile.resolve(), tag or "nanocode-custom", progress, bundle))


ALL_USERS = click.option(
    "--all-users", is_flag=True, help="Every user's sandboxes, not only yours (an administrator's)."
)


@sandbox.command("ls")
@ALL_USERS
def sandbox_ls(all_users: bool) -> None:
    """List your sandbox containers: who owns each (yours marked *), its state and age."""
    from nanocode.sandbox import container, engine

    rows = [item for item in container.ours(engine.connect()) if item.users(all_users)]
    if not rows:
        click.echo("no nanocode containers", err=True)
        return
    click.echo(f"  {'NAME':22} {'STATE':9} {'AGE':>6} {'OWNER (user@host pid run)':44} {'PROJECT':30} NOTE")
    for item in rows:
        click.echo(_row(item))


def _row(item: Any) -> str:
    from nanocode.display import shorten

    labels = item.labels
    owner = shorten(
        f"{labels.get('nanocode.owner.user', '?')}@{labels.get('nanocode.owner.host', '?')} "
        f"{labels.get('nanocode.owner.pid', '?')} {labels.get('nanocode.owner.run', '?')}",
        44,
    )
    note = (
        "dead: any start removes it"
        if item.dead()
        else "running: its owner holds it"
        if item.status == "running"
        else ""
    )
    mark = "*" if item.mine() else " "
    project = shorten(labels.get("nanocode.project", "?"), 30)
    return f"{mark} {item.name:22} {item.status:9} {_age(item.age()):>6} {owner:44} {project:30} {note}"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def parse_age(text: str) -> float:
    """'90', '90s', '30m', '2h', '1d' as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an age such as 90s, 30m, 2h or 1d") from None
    if value < 0:
        raise click.BadParameter("an age cannot be negative")
    return value * units[unit]


@sandbox.command("prune")
@ALL_USERS
@click.option(
    "--stale",
    metavar="AGE",
    help="Also remove running sandboxes older than AGE (90s, 30m, 2h, 1d) that no owner ended: an old "
    "nanocode's, or one whose runtime cannot tell its owner is gone.",
)
def sandbox_prune(all_users: bool, stale: str | None) -> None:
    """Remove dead sandboxes (stopped: their owner is gone) and the networks, volumes and workspaces they
    leave; a running one only with --stale."""
    from nanocode import cleanup
    from nanocode.sandbox import container, engine

    rule = container.Prune(everyone=all_users, stale=parse_age(stale) if stale else None)
    removed = cleanup.remove_leftovers(engine.connect(), lambda line: click.echo(line, err=True), rule)
    for name in removed.names():
        click.echo(name)
    click.echo(removed.summary(), err=True)
