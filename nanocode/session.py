"""A session: the settings, the model, the transcript and the executor of each goal, put together."""

import re
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from nanocode import context, instructions, prompts, resume
from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.context import Context
from nanocode.display import QuietDisplay, TerminalDisplay, printable
from nanocode.egress import allowlist
from nanocode.errors import ConfigError, Interrupted, NanocodeError
from nanocode.interfaces import Display, Executor, Model
from nanocode.transcript import Transcript, default_path

if TYPE_CHECKING:
    import docker

    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor
    from nanocode.sandbox.isolation import Isolation

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
    allow_hosts: list[str]
    host_ca: bool
    runtime: str | None
    require_isolation: list[str]
    command_timeout: float
    output_cap: int
    limits: Limits
    max_tokens: int
    request_timeout: float
    retries: int
    transcript: Path | None
    replay: Path | None
    quiet: bool
    context_window: int | None = None
    compact_threshold: float = 0.8
    compact_model: str | None = None
    prompt_cache: bool = True
    instructions: bool = True
    checks: tuple[str, ...] = ()
    resume: Path | None = None
    workspace: str = "bind"
    apply_changes: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Settings":
        found = resume.find(options["resume"]) if options["resume"] else None
        # A resumed goal goes on in its own project unless told otherwise.
        project = Path(options["project"] or (found and resume.project_of(found)) or Path.cwd()).expanduser()
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
        _check_base_url(options["base_url"])
        allow_hosts = allowlist.expand(options["allow_hosts"])
        if allow_hosts and not options["sandbox"]:
            raise ConfigError("--allow-host works in the sandbox only: add --sandbox")
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
        values["allow_hosts"] = allow_hosts
        values["require_isolation"] = sorted(
            set(options["require_isolation"]) | ({"limits"} if options["require_limits"] else set())
        )
        values["limits"] = Limits(
            max_steps=options["max_steps"],
            max_continuations=options["max_continuations"],
            max_seconds=options["max_time"],
            max_cost=options["max_cost"],
            repeat_note=options["repeat_note"],
            max_repeats=options["max_repeats"],
        )
        values["checks"] = tuple(check for check in options["checks"] if check.strip())
        values["resume"] = found
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
        self.resumed = resume.rebuild(settings.resume) if settings.resume else None
        self.model = self._model()
        self.workspaces: Callable[[str], Any] | None = None  # opens a goal's workspace, in the sandbox
        self.kept: Any = None  # the change set of the last goal
        self._open_executor, environment = self._executor_factory()
        system = self._system_prompt(environment)
        self.transcript = Transcript(self.resumed.path if self.resumed else settings.transcript or default_path())
        self.context = self._context()
        self.transcript.record(
            "start",
            model=self.model.name,
            project=str(settings.project),
            sandbox=settings.sandbox,
            base_url=settings.base_url,
            context_window=self.context.window.tokens,
            context_window_source=self.context.window.source,
            resumed=bool(self.resumed),
            system=system,
        )
        if self.resumed:
            cut = f" ({self.resumed.skipped} damaged lines skipped)" if self.resumed.skipped else ""
            self.display.note(f"resuming the last goal of {self.resumed.path}{cut} · {self.context.window.describe()}")
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
        )

    def _executor_factory(self) -> tuple[Callable[[Any], Executor], str]:
        """How to open the executor of a goal, and how to describe it to the model."""
        s = self.settings
        project = str(s.project)
        if not s.sandbox:
            from nanocode.host import HostExecutor

            secrets = [s.api_key] if s.api_key else []
            return lambda workspace: HostExecutor(project, s.output_cap, secrets), prompts.HOST
        from nanocode.sandbox import container, engine, image
        from nanocode.sandbox.container import SandboxConfig
        from nanocode.sandbox.executor import SandboxExecutor
        from nanocode.workspace import workspace

        client = engine.connect()
        facts = engine.facts(client)
        engine.check_runtime(facts, s.runtime)
        for name in container.prune(client, self.display.note):
            self.display.note(f"removed stale sandbox container {name}")
        workspace.recover(client, self.display.note)
        from nanocode.egress.goal import remove_orphan_files

        remove_orphan_files(client)
        tag = s.image or image.ensure_image(client, self.display.note)
        config = SandboxConfig(
            project=project, image=tag, memory=s.memory, cpus=s.cpus, pids=s.pids, network=s.network, runtime=s.runtime
        )
        if facts.rootless:
            config.user = "0:0"  # the engine's root is the user who runs it: files stay theirs
        self.workspaces = lambda goal: workspace.open_workspace(
            client, project, s.workspace, goal, self.display.note, tag, config.user
        )
        network = prompts.NETWORK_NONE if s.network == "none" else prompts.NETWORK_ON.format(mode=s.network)
        bundle = self._trust(config)
        if s.allow_hosts:
            network = prompts.NETWORK_ALLOWLIST.format(hosts=", ".join(s.allow_hosts))
        git = prompts.GIT_OVERLAY if s.workspace == "overlay" else prompts.GIT_BIND
        limits = prompts.limits(s.memory, s.cpus, s.pids, facts.unenforced)
        environment = prompts.SANDBOX.format(image=tag, limits=limits, network=network, git=git)

        def sandbox(config: SandboxConfig) -> SandboxExecutor:
            return SandboxExecutor(
                client, config, s.output_cap, self.display.note, facts, s.require_isolation, self._isolation
            )

        start = self._allowlisted(client, bundle, sandbox) if s.allow_hosts else sandbox

        def open_executor(workspace: Any) -> Executor:
            return start(replace(config, mounts=workspace.mounts))

        return open_executor, environment

    def _isolation(self, isolation: "Isolation") -> None:
        """Said at the start of each sandbox, and kept in the transcript."""
        self.display.note(isolation.line())
        self.transcript.record("isolation", **isolation.record())

    def _trust(self, config: "SandboxConfig") -> str | None:
        """The host's CA bundle, for a sandbox with a network (and its proxy), unless --no-host-ca."""
        s = self.settings
        if not s.host_ca or (s.network == "none" and not s.allow_hosts):
            return None
        from nanocode.egress import trust

        bundle = trust.host_bundle()
        if bundle is None:
            self.display.note("no CA bundle found on the host: the sandbox trusts only its own")
            return None
        config.extra_mounts.append(trust.mount(bundle))
        config.environment.update(trust.environment())
        return bundle

    def _allowlisted(
        self,
        client: "docker.DockerClient",
        bundle: str | None,
        sandbox: Callable[["SandboxConfig"], "SandboxExecutor"],
    ) -> Callable[["SandboxConfig"], Executor]:
        """Each goal on a network of its own, whose only way out is a proxy to the allowed hosts;
        --network names the proxy's way out."""
        from nanocode.egress.goal import AllowlistedSandbox

        s = self.settings
        outside = "bridge" if s.network == "none" else s.network
        return lambda config: AllowlistedSandbox(
            client, config, s.allow_hosts, outside, sandbox, self.transcript, self.display.note, bundle
        )

    def run_goal(self, goal: str | None) -> str:
        """Runs one goal (None: the one resumed) in an executor of its own, which is closed however it ends."""
        with self.signals.goal():
            executor: Executor | None = None
            workspace: Any = None
            outcome = "error"
            self.kept = None
            text = (goal or "").strip() if goal is not None or not self.resumed else str(self.resumed.goal["content"])
            try:
                if self.workspaces is not None:
                    workspace = self.workspaces(uuid.uuid4().hex[:12])
                executor = self._open_executor(workspace)
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
            if self.kept is not None:
                from nanocode.workspace import review

                review.ask(self.kept)
                self.kept = None


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
