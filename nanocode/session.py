"""A session: the settings, the model, the transcript and the executor of each goal, put together."""

import contextlib
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import click

from nanocode import prompts
from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.display import QuietDisplay, TerminalDisplay, printable
from nanocode.errors import ConfigError, Interrupted, NanocodeError
from nanocode.interfaces import Display, Executor, Model
from nanocode.transcript import Transcript, default_path

MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


@dataclass
class Settings:
    model: str
    base_url: str
    api_key: str | None
    project: Path
    sandbox: bool
    image: str | None
    memory: str
    cpus: float
    pids: int
    network: str
    command_timeout: float
    output_cap: int
    limits: Limits
    max_tokens: int
    request_timeout: float
    retries: int
    transcript: Path | None
    replay: Path | None
    quiet: bool
    workspace: str = "bind"
    apply_changes: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Settings":
        project = Path(options["project"] or Path.cwd()).expanduser()
        if not project.is_dir():
            raise ConfigError(f"the project directory {project} does not exist")
        if options["sandbox"] and not options["project"] and project.resolve() in (Path.home().resolve(), Path("/")):
            raise ConfigError(
                f"refusing to share all of {project} with the sandbox: start nanocode in a project folder, "
                "or name one with --project"
            )
        if options.get("workspace") == "overlay" and not options["sandbox"]:
            raise ConfigError("--workspace overlay needs --sandbox")
        if options.get("apply_changes") and options.get("workspace") != "overlay":
            raise ConfigError("--apply needs --workspace overlay (bind mode changes the project as the goal runs)")
        if options["network"] == "host" or options["network"].startswith("container:"):
            raise ConfigError(
                f"--network {options['network']} would share a namespace with the host or another "
                "container: use none, bridge, or a network of your own"
            )
        if not MEMORY.match(options["memory"]):
            raise ConfigError(f"--memory {options['memory']!r} is not a size such as 512m or 2g")
        if not options["api_key"] and not options["replay"]:
            raise ConfigError(
                "OPENROUTER_API_KEY is not set: put it in the environment or in a .env file (see .env.example)"
            )
        names = {f.name for f in cls.__dataclass_fields__.values()}
        values = {k: v for k, v in options.items() if k in names}
        values["project"] = project.resolve()
        for name in ("transcript", "replay"):
            values[name] = Path(options[name]) if options[name] else None
        values["memory"] = options["memory"].lower()
        values["limits"] = Limits(
            max_steps=options["max_steps"],
            max_continuations=options["max_continuations"],
            max_seconds=options["max_time"],
            max_cost=options["max_cost"],
        )
        return cls(**values)


Note = Callable[[str], None]


@dataclass
class Engine:
    """What the goals of a run share on one Docker engine: its client and the sandbox image."""

    client: Any
    image: str
    rootless: bool


def open_engine(settings: Settings, note: Note, client: Any = None) -> Engine:
    """Connects (unless given a client), removes what killed runs left, and makes sure of the image."""
    from nanocode.sandbox import container, engine, image
    from nanocode.workspace import workspace

    client = client or engine.connect()
    for name in container.prune(client):
        note(f"removed stale sandbox container {name}")
    workspace.recover(client, note)
    tag = settings.image or image.ensure_image(client, note)
    return Engine(client, tag, engine.is_rootless(client))


OpenExecutor = Callable[[Any, Note], Executor]  # given the goal's workspace, and where to say what it does
OpenWorkspace = Callable[[str, Note], Any]  # given the goal's id


def executor_factory(
    settings: Settings, engine: Engine | None, note: Note
) -> tuple[OpenExecutor, OpenWorkspace | None, str]:
    """How to open the executor and the workspace of a goal, and how to describe them to the model."""
    s = settings
    project = str(s.project)
    if not s.sandbox:
        from nanocode.host import HostExecutor

        secrets = [s.api_key] if s.api_key else []
        return lambda workspace, note: HostExecutor(project, s.output_cap, secrets), None, prompts.HOST
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor
    from nanocode.workspace import workspace

    engine = engine or open_engine(s, note)
    tag = s.image or engine.image
    config = SandboxConfig(project=project, image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=s.network)
    if engine.rootless:
        config.user = "0:0"  # the engine's root is the user who runs it: files stay theirs
    network = prompts.NETWORK_NONE if s.network == "none" else prompts.NETWORK_ON.format(mode=s.network)
    git = prompts.GIT_OVERLAY if s.workspace == "overlay" else prompts.GIT_BIND
    environment = prompts.SANDBOX.format(image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=network, git=git)

    def open_workspace(goal: str, note: Note) -> Any:
        return workspace.open_workspace(engine.client, project, s.workspace, goal, note, tag, config.user)

    def open_executor(workspace: Any, note: Note) -> Executor:
        shared = replace(config, mounts=workspace.mounts)
        return SandboxExecutor(engine.client, shared, s.output_cap, note)

    return open_executor, open_workspace, environment


class Session:
    """Owns what lives as long as nanocode runs; opens and closes an executor per goal.

    A batch runs each goal in a session of its own, sharing the engine and the model's gate.
    """

    def __init__(
        self,
        settings: Settings,
        display: Display | None = None,
        engine: Engine | None = None,
        gate: Any = None,
        transcript: Transcript | None = None,
    ):
        self.settings = settings
        self.display: Display = display or (QuietDisplay() if settings.quiet else TerminalDisplay())
        self.model = self._model(gate)
        self.kept: Any = None  # the change set of the last goal
        # self.workspaces opens a goal's workspace (None without the sandbox)
        self._open_executor, self.workspaces, environment = executor_factory(settings, engine, self.display.note)
        self.transcript = transcript or Transcript(settings.transcript or default_path())
        self.transcript.record(
            "start",
            model=self.model.name,
            project=str(settings.project),
            sandbox=settings.sandbox,
            base_url=settings.base_url,
        )
        system = prompts.system_prompt(
            str(settings.project), settings.command_timeout, settings.output_cap, environment
        )
        self.agent = Agent(self.model, system, settings.limits, settings.command_timeout, self.display, self.transcript)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.transcript.close()

    def _model(self, gate: Any = None) -> Model:
        s = self.settings
        if s.replay:
            from nanocode.model.replay import ReplayModel

            return ReplayModel(s.replay)
        from nanocode.model.openai import OpenAIModel

        assert s.api_key
        return OpenAIModel(
            s.base_url,
            s.api_key,
            s.model,
            max_tokens=s.max_tokens,
            timeout=s.request_timeout,
            retries=s.retries,
            gate=gate,
        )

    def prepare(self, note: Note | None = None) -> tuple[Any, Executor]:
        """A goal's workspace and executor, sandbox up: opened when the goal starts, or ahead of it."""
        note = note or self.display.note
        workspace = None
        try:
            if self.workspaces is not None:
                workspace = self.workspaces(uuid.uuid4().hex[:12], note)
            return workspace, self._open_executor(workspace, note)
        except BaseException:
            if workspace is not None:
                with _shielded():
                    workspace.close()
            raise

    def run_goal(self, goal: str, executor: Executor | None = None, workspace: Any = None) -> str:
        """Runs one goal in an executor of its own, which is closed however the goal ends. An executor
        given was started ahead; a workspace given with it is finished here, as one opened here is (a
        batch gives none: it finishes its goals' workspaces itself)."""
        with _signals_interrupt():
            outcome = "error"
            self.kept = None
            try:
                if executor is None:
                    workspace, executor = self.prepare()
                answer = self.agent.run(goal.strip(), executor)
                outcome = "complete"
                return answer
            except KeyboardInterrupt as exc:
                outcome = "interrupted"
                self.transcript.record("end", outcome="interrupted")
                stopped = Interrupted("interrupted: the goal was stopped")
                stopped.terminated = isinstance(exc, _Terminated)
                raise stopped from None
            except NanocodeError as exc:
                outcome = type(exc).__name__
                self.transcript.record("end", outcome=type(exc).__name__, reason=exc.format_message())
                raise
            finally:
                with _shielded():
                    if executor is not None:
                        executor.close()
                    if workspace is not None:
                        from nanocode.workspace import review

                        record = self.transcript.record
                        apply_now = self.settings.apply_changes
                        self.kept = review.conclude(
                            workspace, goal.strip(), outcome, apply_now, self.display.note, record
                        )

    def repl(self) -> None:
        self.display.note(
            f"nanocode · {self.model.name} · {self.settings.project}{' · sandbox' if self.settings.sandbox else ''}"
        )
        self.display.note("Each line is a goal. An empty line or Ctrl-D quits.")
        ahead: _Ahead | None = None
        try:
            while True:
                if self.settings.sandbox and ahead is None:
                    ahead = _Ahead(self.prepare)  # the next goal's sandbox starts while the person types
                try:
                    # With a sandbox waiting, SIGTERM at the prompt must remove it too.
                    with _signals_interrupt() if ahead else contextlib.nullcontext():
                        line = _read_goal()
                except _Terminated:
                    stopped = Interrupted("interrupted")
                    stopped.terminated = True
                    raise stopped from None
                except (EOFError, KeyboardInterrupt):
                    click.echo("", err=True)
                    return
                if not line.strip():
                    return
                taken, ahead = ahead, None
                try:
                    workspace, executor = taken.take(self.display.note) if taken else (None, None)
                    click.echo(printable(self.run_goal(line, executor, workspace)))
                except NanocodeError as exc:
                    if isinstance(exc, ConfigError) or (isinstance(exc, Interrupted) and exc.terminated):
                        raise
                    exc.show()
                if self.kept is not None:
                    from nanocode.workspace import review

                    review.ask(self.kept)
                    self.kept = None
        finally:
            if ahead is not None:
                with _shielded():
                    ahead.discard()


class _Ahead:
    """A goal's workspace and sandbox, started in a thread before the goal is known; what it says
    while the person types is told when the goal takes it."""

    def __init__(self, prepare: Callable[[Note], tuple[Any, Executor]]):
        self._said: list[str] = []
        self._prepared: tuple[Any, Executor] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(prepare,), daemon=True)
        self._thread.start()

    def _run(self, prepare: Callable[[Note], tuple[Any, Executor]]) -> None:
        try:
            self._prepared = prepare(self._said.append)
        except BaseException as exc:
            self._error = exc

    def take(self, note: Note) -> tuple[Any, Executor]:
        self._thread.join()
        for line in self._said:
            note(line)
        if self._error is not None:
            raise self._error
        assert self._prepared is not None
        return self._prepared

    def discard(self) -> None:
        self._thread.join()
        if self._prepared is not None:
            workspace, executor = self._prepared
            executor.close()
            if workspace is not None:
                try:
                    workspace.finish("", "unused")  # nothing ran in it: this only settles its journal
                finally:
                    workspace.close()


def _read_goal() -> str:
    if sys.stdin.isatty():
        return input("> ")
    # Piped in: the prompt goes to stderr, so that stdout holds only the answers.
    click.echo("> ", err=True, nl=False)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: like Ctrl-C for the goal, but the REPL ends too."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a goal the way Ctrl-C does, so that its cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a batch's worker: the batch itself handles the signals
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _shielded() -> Iterator[None]:
    """A second Ctrl-C must not cut the removal of what the goal started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
