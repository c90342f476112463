"""One goal of a batch, whatever schedules it: prepare its workspace and sandbox, run its session, keep
its change set, and make its result."""

import contextlib
import dataclasses
import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanocode.batch import results
from nanocode.batch.engines import Slot
from nanocode.batch.goal import GoalTranscript, Guarded
from nanocode.batch.progress import GoalDisplay
from nanocode.batch.results import CHANGES, Result
from nanocode.batch.state import BatchState, Planned
from nanocode.interfaces import Executor
from nanocode.session import Session
from nanocode.wiring import executor_factory


@dataclass(eq=False)
class Prepared:
    """A goal whose workspace exists and whose sandbox is up (with the pool); it holds its room in the
    engine's ledger from when it runs (or, without the pool, from when it is prepared)."""

    planned: Planned
    slot: Slot
    workspace: Any = None  # nanocode.workspace's: an overlay layer of the project, for this goal only
    executor: Executor | None = None
    display: GoalDisplay | None = None
    transcript: GoalTranscript | None = None  # closed last, after what may still record in it
    released: bool = False
    holds_room: bool = False


def prepare(state: BatchState, item: Prepared, warm: bool) -> None:
    """Opens the goal's results folder and transcript, its workspace, and (warm) its sandbox."""
    item.display, item.transcript = _transcript(state, item.planned)
    _, open_workspace, _ = executor_factory(item.planned.settings, item.slot.engine, _silent, item.transcript)
    assert open_workspace is not None, "a batch runs its goals in sandboxes"
    item.workspace = open_workspace(uuid.uuid4().hex[:12], _silent)
    if warm and not state.stop.is_set():
        item.executor = open_executor(item, _silent)


def _transcript(state: BatchState, planned: Planned) -> tuple[GoalDisplay, GoalTranscript]:
    """The goal's results folder, without an earlier run's change set, and its transcript."""
    folder = results.folder(state.out, planned.goal.id)
    shutil.rmtree(folder / CHANGES, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    display = GoalDisplay(state.progress, planned.goal.id)
    return display, GoalTranscript(folder / "transcript.jsonl", display, state.spend)


def open_executor(item: Prepared, note: Callable[[str], None]) -> Executor:
    opener, _, _ = executor_factory(item.planned.settings, item.slot.engine, note, item.transcript)
    return opener(item.workspace, note)


def run_session(
    state: BatchState, item: Prepared, started: float, engine_gone: Callable[[str], str], shown: str
) -> Result:
    """Runs the goal's session in its sandbox; its result without the change set, not yet recorded.
    `shown` names the engine (or node) in the progress table."""
    goal, settings = item.planned.goal, item.planned.settings
    display, transcript = item.display, item.transcript
    assert display is not None and transcript is not None, "made with the goal's workspace"
    state.progress.start(goal.id, shown)
    result = Result(goal.id, goal.text, str(settings.project), "crash", engine=item.slot.name)
    try:
        # Not a `with`: the transcript outlives the session, until the sandbox and workspace are gone.
        session = Session(_run_settings(state, item), display, item.slot.engine, state.gate, transcript)
        if item.executor is None:
            item.executor = open_executor(item, display.note)
        result.ready_seconds = round(time.monotonic() - started, 4)
        result.answer = session.run_goal(goal.text, Guarded(item.executor, state.outer))
        result.outcome = "complete"
    except BaseException as exc:  # a goal's failure is its own, whatever it is
        result.outcome, result.reason = state.outcome(exc, engine_gone)
    result.steps, result.cost = transcript.steps, round(transcript.cost, 6)
    result.continuations = max(0, transcript.idle_replies - (result.outcome == "complete"))
    result.prompt_tokens, result.completion_tokens = transcript.prompt_tokens, transcript.completion_tokens
    result.model_seconds = round(transcript.model_seconds, 4)
    return result


def _run_settings(state: BatchState, item: Prepared) -> Any:
    folder = results.folder(state.out, item.planned.goal.id)
    settings = item.planned.settings
    return dataclasses.replace(
        settings, transcript=folder / "transcript.jsonl", limits=dataclasses.replace(settings.limits, outer=state.outer)
    )


def keep_changes(state: BatchState, item: Prepared, result: Result, sent_back: bool = False) -> None:
    """Closes the goal's sandbox, then keeps its change set with the other change sets and copies it
    into its results folder (moves it there, when that folder is `sent_back` from a Ray node, which
    keeps nothing of its goals); a change set that cannot be kept is said in the result's reason."""
    if item.executor is not None:
        with contextlib.suppress(Exception):
            item.executor.close()
    try:
        kept = _finish_workspace(item.workspace, item.planned.goal.text, result.outcome)
        if kept is None:
            return
        target = results.folder(state.out, item.planned.goal.id) / CHANGES
        if sent_back:
            _move(kept.folder, target)
        else:
            shutil.copytree(kept.folder, target, symlinks=True, dirs_exist_ok=True)
        result.change_set = kept.id
        result.files_changed = [entry.path for entry in kept.manifest.entries]
    except Exception as exc:
        result.reason += f" (the change set could not be kept: {exc})"


def _move(source: Path, target: Path) -> None:
    """A rename, within one filesystem; across two, a copy and the source removed."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(source)


def close(item: Prepared) -> Any:
    """Closes the goal's executor, workspace and transcript; returns the workspace if it could not be
    removed (a container may still hold it), for a later sweep."""
    unclosed = None
    if item.executor is not None:
        with contextlib.suppress(Exception):
            item.executor.close()
    if item.workspace is not None:
        try:
            wait_unused(item.slot.client, getattr(item.workspace, "volume", ""))
            item.workspace.close()
        except Exception:
            unclosed = item.workspace
    if item.transcript is not None:
        item.transcript.close()
    return unclosed


def failed(planned: Planned, slot: Slot, outcome: str, reason: str, seconds: float) -> Result:
    """The result of a goal that never started."""
    goal = planned.goal
    return Result(goal.id, goal.text, str(planned.settings.project), outcome, reason, seconds=seconds, engine=slot.name)


def _finish_workspace(workspace: Any, goal: str, outcome: str) -> Any:
    """The goal's change set; an interrupt removes containers through the engine, which may still be
    at it (the volume busy) when the goal sees its sandbox gone."""
    from docker.errors import APIError

    for _ in range(50):
        try:
            return workspace.finish(goal, outcome)
        except APIError as exc:
            if exc.status_code != 409:
                raise
            time.sleep(0.1)
    return workspace.finish(goal, outcome)


def wait_unused(client: Any, volume: str, seconds: float = 10.0) -> None:
    """Until no container holds the volume: one being removed (an interrupt, a sweep) still does. An
    engine that does not answer holds nothing that can be waited for: the workspace closes what it can."""
    from requests import RequestException

    deadline = time.monotonic() + seconds
    while volume and time.monotonic() < deadline:
        try:
            if not client.api.containers(all=True, filters={"volume": volume}):
                return
        except RequestException:
            return
        time.sleep(0.1)


def _silent(text: str) -> None:
    """A sandbox started ahead says nothing: its goal has not started."""
