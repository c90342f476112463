"""What a person sees and decides when a goal's workspace ends: the summary, then apply, discard or keep."""

import sys
from collections.abc import Callable

import click

from nanocode.errors import NanocodeError
from nanocode.workspace import apply, store
from nanocode.workspace.workspace import Kept, Workspace


def conclude(
    workspace: Workspace,
    goal: str,
    outcome: str,
    apply_now: bool,
    note: Callable[[str], None],
    record: Callable[..., None],
    asked: bool = False,
) -> Kept | None:
    """Finishes and closes the workspace; the change set is summarised, then applied (when `apply_now`
    and the goal completed) or kept. Returns the change set if it was kept. `asked`: the person is
    asked next what to do with it (the REPL), so it is not said kept before they answer."""
    try:
        kept = workspace.finish(goal, outcome)
    finally:
        workspace.close()
    if kept is None:
        return None
    record("changes", id=kept.id, files=len(kept.manifest.entries))
    for line in [*kept.notes, *kept.summary()]:
        note(line)
    if apply_now and outcome == "complete":
        _apply(kept)
        click.echo(f"nanocode: applied change set {kept.id}", err=True)
        return None
    if not asked:
        click.echo(f"nanocode: change set {kept.id} {_kept(kept)}", err=True)
    return kept


def _kept(kept: Kept) -> str:
    return f"kept: nanocode diff {kept.id}; nanocode apply {kept.id}"


def _apply(kept: Kept) -> None:
    try:
        apply.apply(kept.manifest, kept.folder)
    except apply.ApplyError as exc:
        raise apply.ApplyError(f"{exc.format_message()} (change set {kept.id} kept)") from None
    apply.mark_applied(kept.manifest, kept.folder)


def ask(kept: Kept) -> None:
    """The REPL's question after a goal that changed something."""
    try:
        click.echo("apply / discard / keep? [a/d/K] ", err=True, nl=False)
        answer = (input() if sys.stdin.isatty() else sys.stdin.readline()).strip().lower()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    try:
        if answer in ("a", "apply"):
            _apply(kept)
            click.echo(f"applied change set {kept.id}", err=True)
        elif answer in ("d", "discard"):
            store.discard(kept.id)
            click.echo(f"discarded change set {kept.id}", err=True)
        else:
            click.echo(f"change set {kept.id} {_kept(kept)}", err=True)
    except NanocodeError as exc:
        exc.show()
