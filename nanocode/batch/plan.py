"""From the command line to a running batch: the goals' settings, the engines and their workers, the out folder."""

import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanocode.batch import results
from nanocode.batch.engines import SHARE, Slot, capacity, connect, copy_image, default_workers, parse_spec
from nanocode.batch.goals import Goal
from nanocode.batch.ledger import Ledger, machine_cpus, machine_memory, size
from nanocode.batch.local import LocalEngines
from nanocode.batch.progress import Progress
from nanocode.batch.run import Batch, locked, report
from nanocode.batch.state import BatchState, Budgets, Planned
from nanocode.errors import ConfigError
from nanocode.settings import Settings
from nanocode.wiring import open_engine


@dataclass
class BatchOptions:
    out: Path
    workers: int | None
    retry_failed: bool
    budgets: Budgets
    memory_total: str | None
    cpus_total: float | None
    engines: list[str]
    pool: bool
    quiet: bool
    ray: str | None = None


def default_out(source: str, goals: list[Goal]) -> Path:
    """Under the state folder, named after the goals: the same goals run again resume there."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256("\n".join(f"{g.id}\t{g.text}" for g in goals).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(source).stem)[:40] or "goals"
    return Path(state) / "nanocode" / "batches" / f"{stem}-{digest}"


def plan(goals: list[Goal], options: dict[str, Any]) -> list[Planned]:
    """Every goal's settings, checked before anything runs."""
    planned = []
    for goal in goals:
        try:
            settings = Settings.from_options({**options, **goal.overrides, "transcript": None, "quiet": True})
        except ConfigError as exc:
            raise ConfigError(f"goal {goal.id}: {exc.format_message()}") from None
        planned.append(Planned(goal, settings))
    return planned


def run(goals: list[Goal], options: dict[str, Any], batch: BatchOptions) -> int:
    planned = plan(goals, options)
    with locked(batch.out):
        previous = {g.id: results.read(batch.out, g.id) for g in goals}
        skipped = [r for r in previous.values() if r is not None and results.is_done(r, batch.retry_failed)]
        todo = [p for p in planned if not results.is_done(previous[p.goal.id], batch.retry_failed)]
        progress = Progress(len(todo), quiet=batch.quiet)
        if batch.ray:
            return _on_ray(planned, skipped, batch, progress, len(goals))
        slots = _slots(planned, batch, len(todo), progress.line) if todo else []
        _check_room(todo, slots)
        progress.line(
            f"batch: {len(goals)} goals, {len(skipped)} done already; "
            + "; ".join(_describe(slot) for slot in slots)
            + f"; results in {batch.out}"
        )
        with progress:
            state = BatchState(batch.out, batch.budgets, progress)
            return Batch(planned, state, LocalEngines(state, slots, pool=batch.pool)).run(skipped)


def _on_ray(
    planned: list[Planned], skipped: list[results.Result], batch: BatchOptions, progress: Progress, goals: int
) -> int:
    from nanocode.batch import rayjoin
    from nanocode.batch.apart import apart

    planned = _one_image(planned, progress.line)
    began = time.monotonic()
    before = {p.goal.id: results.stamp(batch.out, p.goal.id) for p in planned}
    code = apart(lambda: _ray_driver(planned, skipped, batch, progress, goals), rayjoin.finished)
    return _driver_lost(planned, skipped, batch, progress, (began, before)) if code is None else code


def _ray_driver(
    planned: list[Planned], skipped: list[results.Result], batch: BatchOptions, progress: Progress, goals: int
) -> int:
    from nanocode.batch import cluster, rayjoin

    assert batch.ray is not None
    progress.stream = rayjoin.set_aside(batch.out / "ray.log")
    rayjoin.connect(batch.ray)  # left by rayjoin.finished, which apart runs once the child has said how it ended
    progress.line(
        f"batch: {goals} goals, {len(skipped)} done already; on the Ray cluster at {batch.ray}; results in {batch.out}"
    )
    state = BatchState(batch.out, batch.budgets, progress)
    with progress:
        return Batch(planned, state, cluster.RayCluster(state)).run(skipped)


def _driver_lost(
    planned: list[Planned],
    skipped: list[results.Result],
    batch: BatchOptions,
    progress: Progress,
    before: tuple[float, dict[str, tuple[int, int] | None]],
) -> int:
    """Ray ended the batch's driver (its node or the cluster's GCS went away): the goals that ended
    keep their results, told from earlier runs' by their result.json being another file than before
    the run (results.write replaces it), and the others are recorded as ended with the cluster."""
    began, stamps = before
    why = "the Ray cluster went away (Ray ended this batch's driver with it)"
    progress.line(f"batch: {why}; the goals that had not ended are recorded as engine failures")
    kept = {r.id: r for r in skipped}
    ordered = []
    for p in planned:
        stamp = results.stamp(batch.out, p.goal.id)
        ended = results.read(batch.out, p.goal.id) if stamp not in (None, stamps[p.goal.id]) else None
        lost = results.Result(p.goal.id, p.goal.text, str(p.settings.project), "engine", why)
        ordered.append(kept.get(p.goal.id) or ended or lost)
    extra = {"interrupted": False, "backoffs": 0, "skipped": list(kept)}
    return report(batch.out, ordered, time.monotonic() - began, extra)


def _one_image(planned: list[Planned], note: Any) -> list[Planned]:
    """Every node runs the sandbox image the submitting machine's engine has (built there if need be),
    so that nodes never build one of their own; without an engine here, each node's own is used."""
    from nanocode.sandbox import engine, image

    if planned[0].settings.image:
        return planned
    try:
        client = engine.connect()
    except ConfigError:
        return planned
    tag = image.ensure_image(client, note)
    return [Planned(p.goal, dataclasses.replace(p.settings, image=p.settings.image or tag)) for p in planned]


def _slots(planned: list[Planned], batch: BatchOptions, goals: int, note: Any) -> list[Slot]:
    first = planned[0].settings
    memory, cpus = size(first.memory), first.cpus
    specs = batch.engines or [""]
    slots: list[Slot] = []
    for spec in specs:
        name, count = parse_spec(spec) if spec else ("default", None)
        if spec:
            client = connect(name)
            total_memory, total_cpus = capacity(client)
        else:
            from nanocode.sandbox import engine

            client = engine.connect()
            total_memory, total_cpus = machine_memory(), float(machine_cpus())
        # CPUs are reserved only where --max-cpus-total asks: a sandbox's --cpus is a ceiling.
        ledger = Ledger(
            size(batch.memory_total) if batch.memory_total else int(total_memory * SHARE),
            batch.cpus_total or math.inf,
        )
        sizing = default_workers(ledger, memory, cpus, goals, total_cpus)
        given = count or batch.workers
        why = ("--engine" if count else "--workers") if given else sizing.why
        slot = Slot(name, client, ledger, workers=given or sizing.workers, why=why)
        # One image on every engine: the first engine's (built there if need be), loaded into the others.
        image = slots[0].engine.image if slots else first.image
        slot.engine = open_engine(dataclasses.replace(first, image=image), note, client)
        if slots:
            copy_image(slots[0].engine.client, client, name, slot.engine.image, note)
        slots.append(slot)
    return slots


def _check_room(todo: list[Planned], slots: list[Slot]) -> None:
    for p in todo:
        if not any(size(p.settings.memory) <= s.ledger.memory for s in slots):
            raise ConfigError(
                f"goal {p.goal.id} needs {p.settings.memory} of memory, more than --max-memory-total allows"
            )


def _describe(slot: Slot) -> str:
    """What really runs at once, and why: the number of goals that run together, what set it, and the
    room they share (CPUs are shared, not reserved, unless --max-cpus-total says otherwise)."""
    cpus = f"{slot.ledger.cpus:g} CPUs reserved" if math.isfinite(slot.ledger.cpus) else "CPUs shared"
    return (
        f"{slot.workers} worker{'s' if slot.workers > 1 else ''} on {slot.name}, {slot.workers} goal"
        f"{'s' if slot.workers > 1 else ''} at once (by {slot.why}; room for "
        f"{slot.ledger.memory / (1 << 30):.1f} GiB, {cpus})"
    )
