"""`nanocode batch GOALS`: many goals, unattended, in parallel; `batch apply` and `batch ls` for what they left."""

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from nanocode.cli.options import PATH, env_option, goal_options


class BatchGroup(click.Group):
    """`nanocode batch GOALS ...` runs a batch; `nanocode batch apply|ls ...` are its subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=BatchGroup)
def batch() -> None:
    """Run many goals unattended, in parallel, each in a sandbox and a workspace of its own.

    nanocode batch GOALS [OPTIONS] runs the goals of a JSON Lines or YAML file ('-' reads stdin);
    `nanocode batch run --help` lists its options.
    """


@batch.command("run")
@click.argument("goals_file", metavar="GOALS", required=False)
@click.option(
    "--goal", "goal_texts", multiple=True, metavar="TEXT", help="A goal (repeatable), with or without a file."
)
@env_option(
    "--workers",
    envvar="NANOCODE_WORKERS",
    type=click.IntRange(min=1),
    help="Goals at once on each engine.  [default: what the engine has room for]",
)
@env_option(
    "--out",
    envvar="NANOCODE_BATCH_OUT",
    type=PATH,
    help="Results folder.  [default: ~/.local/state/nanocode/batches/NAME]",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Run again the goals that ended in an endpoint error, an engine error or a crash.",
)
@env_option(
    "--batch-max-cost",
    envvar="NANOCODE_BATCH_MAX_COST",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Dollars for the whole batch (0: no limit).",
)
@env_option(
    "--batch-max-time",
    envvar="NANOCODE_BATCH_MAX_TIME",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Wall-clock seconds for the whole batch (0: no limit).",
)
@env_option(
    "--max-memory-total",
    envvar="NANOCODE_MAX_MEMORY_TOTAL",
    help="Memory of all running sandboxes together.  [default: 75% of the engine's]",
)
@env_option(
    "--max-cpus-total",
    envvar="NANOCODE_MAX_CPUS_TOTAL",
    type=click.FloatRange(min=0.01),
    help="Reserve each sandbox's --cpus within this total (default: CPUs are shared, not reserved, and up to "
    "4 sandboxes run a core).",
)
@click.option(
    "--engine",
    "engines",
    multiple=True,
    metavar="URL|CONTEXT[=N]",
    help="A Docker engine to spread goals over, with its worker count (repeatable).",
)
@env_option(
    "--ray",
    "ray_address",
    envvar="NANOCODE_RAY",
    metavar="ADDRESS",
    help="Run each goal on a node of this Ray cluster, against the node's own Docker engine ('auto', "
    "'ray://HOST:10001'); needs nanocode[ray].",
)
@env_option(
    "--pool/--no-pool",
    envvar="NANOCODE_POOL",
    default=True,
    help="Start each goal's sandbox ahead of it.",
)
@goal_options
@click.pass_context
def batch_run(ctx: click.Context, /, goals_file: str | None, goal_texts: tuple[str, ...], **options: Any) -> None:
    """Run the goals of GOALS (JSON Lines or YAML; '-' reads stdin) and --goal."""
    from nanocode.batch.ledger import size
    from nanocode.batch.plan import BatchOptions, default_out, run
    from nanocode.batch.state import Budgets

    goals = _read_goals(ctx, goals_file, list(goal_texts))
    _each_goal_in_a_sandbox_and_a_layer(ctx, options)
    batch_options = BatchOptions(
        out=Path(options.pop("out") or default_out(goals_file or "goals", goals)).expanduser(),
        workers=options.pop("workers"),
        retry_failed=options.pop("retry_failed"),
        budgets=Budgets(options.pop("batch_max_cost"), options.pop("batch_max_time")),
        memory_total=options.pop("max_memory_total"),
        cpus_total=options.pop("max_cpus_total"),
        engines=list(options.pop("engines")),
        pool=options.pop("pool"),
        ray=options.pop("ray_address"),
        quiet=options["quiet"],
    )
    if batch_options.ray and batch_options.engines:
        raise click.UsageError("--ray runs goals on the cluster's nodes' engines: --engine is for a local batch")
    if batch_options.memory_total is not None:
        size(batch_options.memory_total)  # a bad size is one line before anything starts
    ctx.exit(run(goals, options, batch_options))


def _each_goal_in_a_sandbox_and_a_layer(ctx: click.Context, options: dict[str, Any]) -> None:
    """Goals side by side on one project must not see each other's changes, nor change it while they run."""
    given = {
        name
        for name in ("sandbox", "workspace")
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
    }
    if ("sandbox" in given and not options["sandbox"]) or ("workspace" in given and options["workspace"] != "overlay"):
        raise click.UsageError("a batch runs every goal in a sandbox with an overlay workspace of its own")
    if ctx.get_parameter_source("resume") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--resume carries on with one run's goal; a batch resumes by running again into --out")
    # NANOCODE_RESUME, set for single runs, would move every goal to that run's project and conversation.
    options.update(sandbox=True, workspace="overlay", apply_changes=False, resume=None)


def _read_goals(ctx: click.Context, path: str | None, texts: list[str]) -> list[Any]:
    from nanocode.batch import goals as parsing
    from nanocode.errors import ConfigError

    if path is None and not texts:
        raise click.UsageError("give a goals file (or '-'), or --goal TEXT")
    found = parsing.from_texts(texts) if texts else []
    if path is not None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the goals file {path}: {exc}") from None
        params = {p.name: p for p in ctx.command.params}

        def convert(name: str, value: Any) -> Any:
            if value is None:
                return None
            if name == "project":  # relative to the goals file's folder
                base = Path.cwd() if path == "-" else Path(path).resolve().parent
                return str(base / Path(str(value)).expanduser())
            try:
                return params[name].type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise ValueError(f"{name}: {exc.message}") from None

        found = parsing.unique(found + parsing.parse(text, "stdin" if path == "-" else path, convert), path)
    return found


@batch.command("apply")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
@click.option("--only", metavar="IDS", help="Comma-separated goal ids to apply (default: every completed goal).")
def batch_apply(out: str, only: str | None) -> None:
    """Apply the change sets of the completed goals in OUT, one after another; stop at the first conflict."""
    from nanocode.batch import results
    from nanocode.errors import ConfigError
    from nanocode.workspace import apply, store
    from nanocode.workspace.changeset import Manifest

    wanted = {i.strip() for i in only.split(",") if i.strip()} if only else None
    found = results.read_all(Path(out))
    missing = (wanted or set()) - {r.id for r in found}
    if missing:
        raise click.UsageError(f"no results for {', '.join(sorted(missing))} in {out}")
    skipped: list[str] = []  # why each goal chosen was not applied
    applied = 0
    for result in found:
        if wanted is not None and result.id not in wanted:
            continue
        if result.outcome != "complete" or not result.change_set:
            skipped.append("not complete" if result.outcome != "complete" else "changed nothing")
            continue
        folder = results.folder(Path(out), result.id) / results.CHANGES
        manifest = Manifest.from_json((folder / store.MANIFEST).read_text(encoding="utf-8"))
        if manifest.applied:
            skipped.append("applied already")
            continue
        try:
            apply.apply(manifest, folder)
        except apply.ApplyError as exc:
            raise apply.ApplyError(f"goal {result.id}: {exc.format_message()}; later goals were not applied") from None
        apply.mark_applied(manifest, folder)
        with contextlib.suppress(ConfigError):  # the copy kept with the other change sets, if it still is
            apply.mark_applied(*store.load(manifest.id))
        click.echo(f"{result.id}: applied change set {manifest.id} to {manifest.project}", err=True)
        applied += 1
    if not applied:
        _nothing_to_apply(out, skipped)


def _nothing_to_apply(out: str, skipped: list[str]) -> None:
    """One line, and the code `nanocode apply` gives: 6 when all was applied already (as applying a
    change set twice), else 3 (as when there is no kept change set)."""
    from nanocode.errors import EXIT_CONFIG, EXIT_CONFLICT

    counts = ", ".join(f"{skipped.count(why)} {why}" for why in dict.fromkeys(skipped)) or "no results"
    click.echo(f"nanocode: nothing to apply in {out}: {counts}", err=True)
    sys.exit(EXIT_CONFLICT if "applied already" in skipped else EXIT_CONFIG)


@batch.command("ls")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
def batch_ls(out: str) -> None:
    """List the results in OUT."""
    from nanocode.batch import results

    found = results.read_all(Path(out))
    if not found:
        click.echo(f"no results in {out}", err=True)
        return
    click.echo(results.table(found))
