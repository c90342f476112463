"""A session: the model, the transcript and the executor of each goal, put together from the settings."""

import uuid
from typing import Any, cast

from nanocode import context, instructions, isolation, prompts, resume
from nanocode.agent import Agent
from nanocode.context import Context
from nanocode.context.window import Lookups
from nanocode.display import QuietDisplay, TerminalDisplay
from nanocode.errors import Interrupted, NanocodeError
from nanocode.interfaces import Display, Executor, Model
from nanocode.settings import Settings
from nanocode.signals import Signals, Terminated
from nanocode.transcript import Transcript, default_path
from nanocode.wiring import Engine, Note, executor_factory


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
        self.signals = Signals()
        self.display: Display = display or (QuietDisplay() if settings.quiet else TerminalDisplay())
        self.resumed = resume.rebuild(settings.resume) if settings.resume else None
        self.gate = gate
        self.model = self._model()
        self.kept: Any = None  # the change set of the last goal
        self.asks = False  # whether the person is asked what to do with a kept change set (the REPL)
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
        if self.resumed and self.resumed.messages[0].get("role") == "system":
            # The model is told where its commands run now, not where they ran before.
            self.resumed.messages[0] = {"role": "system", "content": system}
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
            isolation_settings=isolation.record(vars(s)),
            base_url=s.base_url,
            context_window=self.context.window.tokens,
            context_window_source=self.context.window.source,
            resumed=bool(self.resumed),
            system=system,
        )
        if self.resumed:
            cut = f" ({self.resumed.skipped} damaged lines skipped)" if self.resumed.skipped else ""
            self.display.note(f"resuming the last goal of {self.resumed.path}{cut} · {self.context.window.describe()}")
            if s.restored:
                self.display.note(f"as the run was: {isolation.describe_options(vars(s), s.restored)}")
        # Where the figure came from matters when nanocode found it: said as the first goal starts.
        self._tell_window = not self.resumed and s.context_window is None

    def _system_prompt(self, environment: str) -> str:
        s = self.settings
        system = prompts.system_prompt(str(s.project), s.command_timeout, s.output_cap, environment)
        return instructions.add_to(system, s.project) if s.instructions else system

    def _context(self) -> Context:
        s = self.settings
        lookups = cast(Lookups, self.model) if hasattr(self.model, "props") else None  # a replay asks nothing
        window = context.resolve(s.context_window, s.model, lookups)
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
            notify=self.display.note,
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
                if self._tell_window:
                    self._tell_window = False
                    self.display.note(self.context.window.describe())
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
                stopped.terminated = isinstance(exc, Terminated)
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
                    note = self.display.note
                    self.kept = review.conclude(workspace, text, outcome, apply_now, note, record, self.asks)
