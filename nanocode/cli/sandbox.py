"""`nanocode sandbox ...`: the sandbox image and containers."""

import click


@click.group()
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
    """Remove the containers, networks, volumes and workspaces whose nanocode process is gone."""
    from nanocode import cleanup
    from nanocode.sandbox import engine

    removed = cleanup.remove_leftovers(engine.connect(), lambda line: click.echo(line, err=True))
    for name in removed.names():
        click.echo(name)
    click.echo(removed.summary(), err=True)
