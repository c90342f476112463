"""`nanocode changes | diff | apply | discard`: the change sets that overlay goals kept."""

import sys

import click

CHANGE_ID = click.argument("change_id", metavar="ID")


@click.command("changes")
@click.option("--all", "every", is_flag=True, help="Every project's change sets, not only this project's.")
def changes(every: bool) -> None:
    """List the kept change sets of the project here (the current folder's), newest first."""
    from nanocode.display import shorten
    from nanocode.workspace import store

    kept = store.listed() if every else store.of_project(store.listed())
    if not kept:
        click.echo(
            "no kept change sets" + ("" if every else " for the project here (--all: every project's)"), err=True
        )
        return
    click.echo(f"{'ID':21} {'WHEN':25} {'OUTCOME':16} {'FILES':>5} {'FLAGGED':24} {'PROJECT':30} GOAL")
    for m in kept:
        flagged = ",".join(m.flagged) or "-"
        outcome = f"{m.outcome}{' (applied)' if m.applied else ''}"
        files = len([e for e in m.entries if e.new.kind != "dir"])
        project = shorten(m.project if len(m.project) <= 30 else "…" + m.project[-29:], 30)  # the end tells it
        click.echo(
            f"{m.id:21} {m.created:25} {outcome:16} {files:>5} {shorten(flagged, 24):24} {project:30} "
            f"{shorten(m.goal, 60)}"
        )


@click.command("diff")
@CHANGE_ID
def diff(change_id: str) -> None:
    """Print a change set as a unified diff (ID, or `last`: the project here's newest)."""
    from nanocode.display import printable
    from nanocode.workspace import store, view

    manifest, folder = store.load(change_id)
    color = sys.stdout.isatty()
    for line in view.diff(manifest, folder):
        # Names the sandbox gave may not be valid text: shown escaped, never as terminal controls.
        text = printable(line).encode("utf-8", "backslashreplace").decode("utf-8")
        click.echo(_colored(text) if color else text)


def _colored(line: str) -> str:
    if line.startswith(("+++", "---", "diff ")):
        return click.style(line, bold=True)
    if line.startswith("+"):
        return click.style(line, fg="green")
    if line.startswith("-"):
        return click.style(line, fg="red")
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    return line


@click.command("apply")
@CHANGE_ID
def apply_command(change_id: str) -> None:
    """Apply a change set to its project, all of it or nothing (ID, or `last`: the project here's newest)."""
    from nanocode.workspace import apply, store

    manifest, folder = store.load(change_id)
    if manifest.applied:
        click.echo(f"nanocode: change set {manifest.id} was applied already ({manifest.applied})", err=True)
        sys.exit(apply.EXIT_CONFLICT)
    apply.apply(manifest, folder)
    apply.mark_applied(manifest, folder)
    click.echo(f"applied change set {manifest.id} to {manifest.project}", err=True)


@click.command("discard")
@CHANGE_ID
def discard(change_id: str) -> None:
    """Delete a change set (ID, or `last`: the project here's newest)."""
    from nanocode.workspace import store

    click.echo(f"discarded change set {store.discard(change_id)}", err=True)
