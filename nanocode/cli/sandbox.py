"""`nanocode sandbox ...`: the sandbox image and containers."""

from pathlib import Path

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
    help="With --file: the build's steps trust the host's CA bundle (behind a TLS-inspecting proxy).",
)
def sandbox_build(force: bool, dockerfile: Path | None, tag: str | None, host_ca: bool) -> None:
    """Build the sandbox image (done on first use otherwise), or an image of yours on top of it."""
    from nanocode.egress import trust
    from nanocode.sandbox import engine, image

    progress = lambda line: click.echo(line, err=True)  # noqa: E731
    client = engine.connect()
    if dockerfile is None:
        click.echo(image.ensure_image(client, progress, force=force))
        return
    bundle = trust.host_bundle() if host_ca else None
    click.echo(image.build_custom(client, dockerfile.resolve(), tag or "nanocode-custom", progress, bundle))


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
    """Remove the containers, networks, volumes and workspaces whose nanocode process is gone."""
    from nanocode import cleanup
    from nanocode.sandbox import engine

    removed = cleanup.remove_leftovers(engine.connect(), lambda line: click.echo(line, err=True))
    for name in removed.names():
        click.echo(name)
    click.echo(removed.summary(), err=True)
