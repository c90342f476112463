"""A session: the model, the transcript and the executor of each goal, put together from the settings."""

import contextlib
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from nanocode import context, instructions, prompts, resume
from nanocode.agent import Agent
from nanocode.context import Context
from nanocode.display import QuietDisplay, TerminalDisplay, printable
from nanocode.errors import ConfigError, Interrupted, NanocodeError
from nanocode.interfaces import Display, Executor, Model, Recorder
from nanocode.settings import Settings
from nanocode.transcript import Transcript, default_path

if TYPE_CHECKING:
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor

Note = Callable[[str], None]


class _Unrecorded:
    def record(self, kind: str, **fields: Any) -> None:
        pass


@dataclass
class Engine:
    """What the goals of a run share on one Docker engine: its client, what it says of itself, the image."""

    client: Any
    image: str
    facts: Any  # nanocode.sandbox.engine.Facts


def open_engine(settings: Settings, note: Note, client: Any = None) -> Engine:
    """Connects (unless given a client), removes what killed runs left, and makes sure of the image."""
    from nanocode import cleanup
    from nanocode.sandbox import engine, image

    client = client or engine.connect()
    facts = engine.facts(client)
    for line in cleanup.remove_leftovers(client, note).lines():
        note(line)
    tag = settings.image or image.ensure_image(client, note)
    return Engine(client, tag, facts)


OpenExecutor = Callable[[Any, Note], Executor]  # given the goal's workspace, and where to say what it does
OpenWorkspace = Callable[[str, Note], Any]  # given the goal's id


def executor_factory(
    settings: Settings, engine: Engine | None, note: Note, recorder: Recorder | None = None
) -> tuple[OpenExecutor, OpenWorkspace | None, str]:
    """How to open the executor and the workspace of a goal, and how to describe them to the model.
    `recorder` keeps what the sandbox says of itself (its isolation, its network's connections)."""
    s = settings
    project = str(s.project)
    if not s.sandbox:
        from nanocode.host import HostExecutor

        secrets = [s.api_key] if s.api_key else []
        return lambda workspace, note: HostExecutor(project, s.output_cap, secrets), None, prompts.HOST
    from nanocode.sandbox import engine as engines
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.workspace import workspace

    engine = engine or open_engine(s, note)
    engines.check_runtime(engine.facts, s.runtime, networked=s.network != "none" or bool(s.allow_hosts))
    recorder = recorder or _Unrecorded()
    tag = s.image or engine.image
    config = SandboxConfig(
        project=project, image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=s.network, runtime=s.runtime
    )
    if engine.facts.rootless:
        config.user = "0:0"  # the engine's root is the user who runs it: files stay theirs
    bundle = _trust(s, config, note)
    start = _sandbox_opener(s, engine, bundle, recorder)

    def open_workspace(goal: str, note: Note) -> Any:
        return workspace.open_workspace(engine.client, project, s.workspace, goal, note, tag, config.user)

    def open_executor(workspace: Any, note: Note) -> Executor:
        return start(replace(config, mounts=workspace.mounts), note)

    return open_executor, open_workspace, _environment(s, tag, engine.facts.unenforced)


def _environment(s: Settings, image: str, unenforced: list[str]) -> str:
    """The sandbox as the system prompt describes it: what it holds, and what it lets through."""
    network = prompts.NETWORK_NONE if s.network == "none" else prompts.NETWORK_ON.format(mode=s.network)
    if s.allow_hosts:
        network = prompts.NETWORK_ALLOWLIST.format(hosts=", ".join(s.allow_hosts))
    git = prompts.GIT_OVERLAY if s.workspace == "overlay" else prompts.GIT_BIND
    limits = prompts.limits(s.memory, s.cpus, s.pids, unenforced)
    return prompts.SANDBOX.format(image=image, limits=limits, network=network, git=git)


def _trust(s: Settings, config: "SandboxConfig", note: Note) -> str | None:
    """The host's CA bundle, for a sandbox with a network (and its proxy), unless --no-host-ca."""
    if not s.host_ca or (s.network == "none" and not s.allow_hosts):
        return None
    from nanocode.egress import trust

    bundle = trust.host_bundle()
    if bundle is None:
        note("no CA bundle found on the host: the sandbox trusts only its own")
        return None
    config.extra_mounts.append(trust.mount(bundle))
    config.environment.update(trust.environment())
    return bundle


def _sandbox_opener(
    s: Settings, engine: Engine, bundle: str | None, recorder: Recorder
) -> Callable[["SandboxConfig", Note], Executor]:
    """A goal's sandbox; on an allowlist, on a network of its own whose only way out is a proxy to the
    allowed hosts (--network names the proxy's way out)."""
    from nanocode.egress.goal import AllowlistedSandbox
    from nanocode.sandbox.executor import SandboxExecutor

    def sandbox(config: "SandboxConfig", note: Note) -> "SandboxExecutor":
        def isolation(found: Any) -> None:
            note(found.line())
            recorder.record("isolation", **found.record())

        return SandboxExecutor(engine.client, config, s.output_cap, note, engine.facts, s.require_isolation, isolation)

    if not s.allow_hosts:
        return sandbox
    outside = "bridge" if s.network == "none" else s.network
    return lambda config, note: AllowlistedSandbox(
        engine.client, config, s.allow_hosts, outside, lambda c: sandbox(c, note), recorder, note, bundle
    )


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
        self.signals = _Signals()
        self.display: Display = display or (QuietDisplay() if settings.quiet else TerminalDisplay())
        self.resumed = resume.rebuild(settings.resume) if settings.resume else None
        self.gate = gate
        self.model = self._model()
        self.kept: Any = None  # the change set of the last goal
        path = self.resumed.path if self.resumed else settings.transcript or default_path()
        self.transcript = transcript or Transcript(path)
        try:
            # self.workspaces opens a goal's workspace (None without the sandbox)
            self._open_executor, self.workspaces, environment = executor_factory(
                settings, engine, self.display.note, self.transcript
            )
        except BaseException:
            self.transcript.close()
            raise
        system = self._system_prompt(environment)
        self.context = self._context()
        self._start_record(system)
        self.agent = Agent(
            self.model,
            system,
            settings.limits,
            settings.command_timeout,
            self.display,
            self.transcript,
            self.context,
            settings.checks,
        )

    def _start_record(self, system: str) -> None:
        s = self.settings
        self.transcript.record(
            "start",
            model=self.model.name,
            project=str(s.project),
            sandbox=s.sandbox,
            base_url=s.base_url,
            context_window=self.context.window.tokens,
            context_window_source=self.context.window.source,
            resumed=bool(self.resumed),
            system=system,
        )
        if self.resumed:
            cut = f" ({self.resumed.skipped} damaged lines skipped)" if self.resumed.skipped else ""
            self.display.note(f"resuming the last goal of {self.resumed.path}{cut} · {self.context.window.describe()}")

    def _system_prompt(self, environment: str) -> str:
        s = self.settings
        system = prompts.system_prompt(str(s.project), s.command_timeout, s.output_cap, environment)
        return instructions.add_to(system, s.project) if s.instructions else system

    def _context(self) -> Context:
        s = self.settings
        window = context.resolve(s.context_window, s.model, getattr(self.model, "models", None))
        summariser = None if s.replay else self._model(s.compact_model or s.model)
        return Context(window, s.compact_threshold, summariser, self.display, self.transcript)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.signals.exiting()
        self.transcript.close()

    def _model(self, name: str | None = None) -> Model:
        s = self.settings
        if s.replay and name is None:
            from nanocode.model.replay import ReplayModel

            return ReplayModel(s.replay)
        from nanocode.model.openai import OpenAIModel

        assert s.api_key
        return OpenAIModel(
            s.base_url,
            s.api_key,
            name or s.model,
            max_tokens=s.max_tokens,
            timeout=s.request_timeout,
            retries=s.retries,
            prompt_cache=s.prompt_cache,
            gate=self.gate,
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
                self.signals.hold()
                workspace.close()
            raise

    def run_goal(self, goal: str | None, executor: Executor | None = None, workspace: Any = None) -> str:
        """Runs one goal (None: the one resumed) in an executor of its own, which is closed however the
        goal ends. An executor given was started ahead; a workspace given with it is finished here, as
        one opened here is (a batch gives none: it finishes its goals' workspaces itself)."""
        with self.signals.goal():
            outcome = "error"
            self.kept = None
            text = (goal or "").strip() if goal is not None or not self.resumed else str(self.resumed.goal["content"])
            try:
                if executor is None:
                    workspace, executor = self.prepare()
                if goal is None and self.resumed:
                    answer = self.agent.resume(self.resumed.messages, self.resumed.goal, executor)
                else:
                    answer = self.agent.run(text, executor)
                outcome = "complete"
                return answer
            except KeyboardInterrupt as exc:
                outcome = "interrupted"
                self.transcript.record("end", outcome="interrupted")
                stopped = Interrupted("interrupted: the goal was stopped")
                stopped.terminated = isinstance(exc, _Terminated)
                raise stopped from None
            except NanocodeError as exc:
                outcome = getattr(exc, "outcome", type(exc).__name__)
                self.transcript.record("end", outcome=outcome, reason=exc.format_message(), **self.agent.totals())
                raise
            finally:
                self.signals.hold()  # a second Ctrl-C must not cut the removal of what the goal started
                if executor is not None:
                    executor.close()
                if workspace is not None:
                    from nanocode.workspace import review

                    record = self.transcript.record
                    apply_now = self.settings.apply_changes
                    self.kept = review.conclude(workspace, text, outcome, apply_now, self.display.note, record)

    def repl(self) -> None:
        self.display.note(
            f"nanocode · {self.model.name} · {self.settings.project}{' · sandbox' if self.settings.sandbox else ''}"
            f" · {self.context.window.describe()}"
        )
        self.display.note("Each line is a goal. An empty line or Ctrl-D quits.")
        ahead: _Ahead | None = None
        try:
            while True:
                if self.settings.sandbox and ahead is None:
                    ahead = _Ahead(self.prepare)  # the next goal's sandbox starts while the person types
                line = self._read(ahead is not None)
                if line is None or not line.strip():
                    return
                taken, ahead = ahead, None
                self._repl_goal(line, taken)
        finally:
            if ahead is not None:
                self.signals.hold()
                ahead.discard()

    def _take(self, taken: "_Ahead") -> tuple[Any, Executor]:
        """The sandbox started while the person typed; a signal while it finishes starting removes it."""
        try:
            with self.signals.goal():
                return taken.take(self.display.note)
        except KeyboardInterrupt as exc:
            self.signals.hold()
            taken.discard()
            stopped = Interrupted("interrupted: the goal was stopped")
            stopped.terminated = isinstance(exc, _Terminated)
            raise stopped from None

    def _read(self, waiting: bool) -> str | None:
        """The next goal; None at the end of input. With a sandbox waiting, SIGTERM at the prompt removes it too."""
        try:
            with self.signals.goal() if waiting else contextlib.nullcontext():
                return _read_goal()
        except _Terminated:
            stopped = Interrupted("interrupted")
            stopped.terminated = True
            raise stopped from None
        except (EOFError, KeyboardInterrupt):
            click.echo("", err=True)
            return None

    def _repl_goal(self, line: str, taken: "_Ahead | None") -> None:
        try:
            workspace, executor = self._take(taken) if taken else (None, None)
            click.echo(printable(self.run_goal(line, executor, workspace)))
        except NanocodeError as exc:
            if isinstance(exc, Interrupted) and self.signals.resume():
                exc.terminated = True  # a SIGTERM came while the goal stopped
            if isinstance(exc, ConfigError) or (isinstance(exc, Interrupted) and exc.terminated):
                raise
            exc.show()
        if self.kept is not None:
            from nanocode.workspace import review

            review.ask(self.kept)
            self.kept = None


class _Ahead:
    """A goal's workspace and sandbox, started in a thread before the goal is known; what it says
    while the person types is told when the goal takes it."""

    def __init__(self, prepare: Callable[[Note], tuple[Any, Executor]]):
        self._said: list[str] = []
        self._note: Note = self._said.append  # the sandbox and workspace say things for as long as they live
        self._prepared: tuple[Any, Executor] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(prepare,), daemon=True)
        self._thread.start()

    def _run(self, prepare: Callable[[Note], tuple[Any, Executor]]) -> None:
        try:
            self._prepared = prepare(lambda text: self._note(text))
        except BaseException as exc:
            self._error = exc

    def take(self, note: Note) -> tuple[Any, Executor]:
        self._thread.join()
        self._note = note
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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _in_main_thread() -> bool:
    """Only the main thread may set signal handlers; a batch's workers leave signals to the batch."""
    return threading.current_thread() is threading.main_thread()


class _Signals:
    """How signals act on a goal. SIGINT (Ctrl-C), SIGTERM and SIGHUP stop it, so that its clean-up
    runs; the last two end the REPL too. The first one starts the stop, and from then on the others
    are held until nanocode exits (or the REPL takes the next goal): a second signal cuts neither the
    clean-up nor the exit code."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.held: list[int] = []
        self.stopping = False

    @contextmanager
    def goal(self) -> Iterator[None]:
        if not _in_main_thread():
            yield
            return
        self.held, self.stopping = [], False
        self.previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            if not self.stopping:
                self._restore()
        if not self.stopping and any(sig != signal.SIGINT for sig in self.held):
            # A SIGTERM that came while a goal that ended by itself was cleaning up: it still ends nanocode.
            self.stopping = True
            raise _Terminated

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.hold()  # before anything else runs: there is no moment when a second signal acts
        raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated

    def hold(self) -> None:
        if _in_main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._held)

    def _held(self, signum: int, frame: FrameType | None) -> None:
        self.held.append(signum)

    def resume(self) -> bool:
        """After a goal stopped by Ctrl-C, signals act as before it; True if SIGTERM or SIGHUP came meanwhile."""
        self._restore()
        self.stopping = False
        return any(sig != signal.SIGINT for sig in self.held)

    def exiting(self) -> None:
        """Once stopping, nanocode exits ignoring signals: Python's finalization puts back the default
        action of those it handles itself, under which a late signal would change the exit code."""
        if self.stopping and _in_main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _restore(self) -> None:
        if _in_main_thread():
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
