"""A session: the settings, the model, the transcript and the executor of each goal, put together."""

import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

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
        if options["network"] == "host" or options["network"].startswith("container:"):
            raise ConfigError(
                f"--network {options['network']} would share a namespace with the host or another "
                "container: use none, bridge, or a network of your own"
            )
        _check_base_url(options["base_url"])
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


def _check_base_url(url: str) -> None:
    """A base URL the HTTP client could not use is a setting to fix, found before anything starts."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number, or out of range
        problem = ""
        if any(c.isspace() for c in url):
            problem = "it contains spaces"
        elif parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it names no host"
    except ValueError as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(f"the base URL {url!r} (--base-url, INFERENCE_BASE_URL) is not usable: {problem}")


class Session:
    """Owns what lives as long as nanocode runs; opens and closes an executor per goal."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.signals = _Signals()
        self.display: Display = QuietDisplay() if settings.quiet else TerminalDisplay()
        self.model = self._model()
        self._open_executor, environment = self._executor_factory()
        self.transcript = Transcript(settings.transcript or default_path())
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
        self.signals.exiting()
        self.transcript.close()

    def _model(self) -> Model:
        s = self.settings
        if s.replay:
            from nanocode.model.replay import ReplayModel

            return ReplayModel(s.replay)
        from nanocode.model.openai import OpenAIModel

        assert s.api_key
        return OpenAIModel(
            s.base_url, s.api_key, s.model, max_tokens=s.max_tokens, timeout=s.request_timeout, retries=s.retries
        )

    def _executor_factory(self) -> tuple[Callable[[], Executor], str]:
        """How to open the executor of a goal, and how to describe it to the model."""
        s = self.settings
        project = str(s.project)
        if not s.sandbox:
            from nanocode.host import HostExecutor

            secrets = [s.api_key] if s.api_key else []
            return lambda: HostExecutor(project, s.output_cap, secrets), prompts.HOST
        from nanocode.sandbox import container, engine, image
        from nanocode.sandbox.container import SandboxConfig
        from nanocode.sandbox.executor import SandboxExecutor

        client = engine.connect()
        for name in container.prune(client):
            self.display.note(f"removed stale sandbox container {name}")
        tag = s.image or image.ensure_image(client, self.display.note)
        config = SandboxConfig(project=project, image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=s.network)
        if engine.is_rootless(client):
            config.user = "0:0"  # the engine's root is the user who runs it: files stay theirs
        network = prompts.NETWORK_NONE if s.network == "none" else prompts.NETWORK_ON.format(mode=s.network)
        environment = prompts.SANDBOX.format(image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=network)
        return lambda: SandboxExecutor(client, config, s.output_cap, self.display.note), environment

    def run_goal(self, goal: str) -> str:
        """Runs one goal in an executor of its own, which is closed however the goal ends."""
        with self.signals.goal():
            executor: Executor | None = None
            try:
                executor = self._open_executor()
                return self.agent.run(goal.strip(), executor)
            except KeyboardInterrupt as exc:
                self.transcript.record("end", outcome="interrupted")
                stopped = Interrupted("interrupted: the goal was stopped")
                stopped.terminated = isinstance(exc, _Terminated)
                raise stopped from None
            except NanocodeError as exc:
                self.transcript.record("end", outcome=type(exc).__name__, reason=exc.format_message())
                raise
            finally:
                self.signals.hold()  # a second Ctrl-C must not cut the removal of what the goal started
                if executor is not None:
                    executor.close()

    def repl(self) -> None:
        self.display.note(
            f"nanocode · {self.model.name} · {self.settings.project}{' · sandbox' if self.settings.sandbox else ''}"
        )
        self.display.note("Each line is a goal. An empty line or Ctrl-D quits.")
        while True:
            try:
                line = _read_goal()
            except (EOFError, KeyboardInterrupt):
                click.echo("", err=True)
                return
            if not line.strip():
                return
            try:
                click.echo(printable(self.run_goal(line)))
            except NanocodeError as exc:
                if isinstance(exc, Interrupted) and self.signals.resume():
                    exc.terminated = True  # a SIGTERM came while the goal stopped
                if isinstance(exc, ConfigError) or (isinstance(exc, Interrupted) and exc.terminated):
                    raise
                exc.show()


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
        self.held, self.stopping = [], False
        self.previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            if not self.stopping:
                self._restore()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.hold()  # before anything else runs: there is no moment when a second signal acts
        raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated

    def hold(self) -> None:
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
        if self.stopping:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
