"""The sandbox executor: every tool call of a goal runs in that goal's container."""

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from nanocode import prompts
from nanocode.errors import ConfigError
from nanocode.interfaces import CommandResult, Watch
from nanocode.runtime.client import ChannelClosed, MalformedReply, RuntimeClient, RuntimeExited
from nanocode.runtime.executor import RuntimeExecutor
from nanocode.sandbox import channel, engine, isolation
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.channel import SocketTransport
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.isolation import Isolation

# How long after an OOM kill the engine may log its event (see SandboxExecutor._out_of_memory).
OOM_EVENT_LAG = 5.0
# How long the engine may go on making a container whose create request was cut off.
CUT_OFF_WAIT = 2.0


class SandboxExecutor(RuntimeExecutor):
    """The runtime as the main process of a container made for the goal; close() removes the container."""

    def __init__(
        self,
        client: docker.DockerClient,
        config: SandboxConfig,
        output_cap: int,
        note: Callable[[str], None] = lambda text: None,
        facts: engine.Facts | None = None,
        required: Sequence[str] = (),
        report: Callable[[Isolation], None] | None = None,
    ):
        self.docker = client
        self.config = config
        self.output_cap = output_cap
        self.note = note
        self.facts = facts
        self.required = list(required)
        self.report = report or (lambda isolation: note(isolation.line()))
        self.isolation: Isolation | None = None  # of the current container, once it started
        self.name: str | None = None  # of the current container, known before it exists
        self.container_id: str | None = None
        self.folder: str | None = None  # shared with the container, for the runtime's socket
        self.oom_reported: tuple[str | None, float] = (None, 0.0)  # the container, and when
        self.cut_off = False  # a create was cut off before the engine answered
        self.heartbeat: channel.Heartbeat | None = None  # holds the current container's lease
        super().__init__()

    def _start(self) -> RuntimeClient:
        goal = uuid.uuid4().hex[:12]
        self.name = f"nanocode-{goal}"
        if self.facts is None:
            self.facts = engine.facts(self.docker)
        with contextlib.suppress(OSError):  # without it, the attach stream carries the requests
            self.folder = channel.make_folder(goal)
        try:
            runtime = self._launch(goal)
        except _FolderRefused:
            # An engine that cannot see the folder (in a VM, on another machine, with a /tmp of its
            # own) refuses it, when the container is made or when it starts: it is made again
            # without it, and the attach stream carries the requests.
            self._remove_container()
            if self.folder is not None:
                channel.remove_folder(self.folder)
            self.folder = None
            runtime = self._launch(goal)
        assert self.isolation is not None
        self.isolation.fallbacks = [str(f) for f in runtime.hello.get("fallbacks") or []]
        self.report(self.isolation)
        return runtime

    def _launch(self, goal: str) -> RuntimeClient:
        """Makes the container, checks its isolation, attaches to it and starts the runtime in it.
        A refusal of the socket folder raises _FolderRefused; any other, one line for the user."""
        try:
            self.container_id = self._create(goal)
            inspected = self.docker.api.inspect_container(self.container_id)
        except ImageNotFound:
            raise ConfigError(f"the sandbox image {self.config.image} is not present") from None
        except (DockerException, OSError) as exc:
            self._refused(exc)
            raise ConfigError(f"the engine refused to create the sandbox container: {engine.first_line(exc)}") from None
        assert self.facts is not None
        self.isolation = isolation.observe(self.facts, inspected, self._limits(), [])
        isolation.require(self.isolation, self.required)
        transport: SocketTransport | None = None
        try:
            # Attached before the start, so that nothing the runtime says is missed.
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            transport = SocketTransport(self.docker.api.attach_socket(self.container_id, params=params))
            self.docker.api.start(self.container_id)
            runtime = RuntimeClient(transport, self.config.project, self.output_cap, source=self.source)
            self.heartbeat = channel.Heartbeat(transport, self.config.lease)
            if self.folder is not None:
                channel.go_direct(runtime, transport, self.folder)
        except DockerException as exc:
            if transport is not None:
                transport.close()
            self._refused(exc)
            raise ConfigError(f"the engine refused to start the sandbox container: {engine.first_line(exc)}") from None
        except (ChannelClosed, OSError) as exc:
            message = self._did_not_start(transport, engine.first_line(exc))
            if transport is not None:
                transport.close()
            raise ConfigError(message) from None
        return runtime

    def _refused(self, exc: BaseException) -> None:
        """Raises _FolderRefused when what the engine refused was the socket folder's mount."""
        words = f"{getattr(exc, 'explanation', '') or ''} {exc}"
        if self.folder is not None and self.folder in words:
            raise _FolderRefused from None

    def _limits(self) -> str:
        c = self.config
        return f"memory {c.memory}, {c.cpus:g} CPUs, {c.pids} processes"

    def _did_not_start(self, transport: SocketTransport | None, reason: str) -> str:
        """The runtime's own words, where it said any, point at the image; else the reason is the engine's."""
        detail = bytes(transport.stderr).decode(errors="replace").strip() if transport else ""
        if not detail:
            return f"the sandbox did not start in image {self.config.image}: {reason}"
        return (
            f"the sandbox did not start in image {self.config.image}: {detail.splitlines()[-1]} "
            "(the image needs python3 and bash or sh; see README)"
        )

    def _create(self, goal: str) -> str:
        """Makes the container. A create cut off (Ctrl-C) before the engine answers may still make it
        there, after nanocode removed what it knew of: `cut_off` tells _remove_container to wait for it."""
        self.cut_off = True
        try:
            made: str = lifecycle.create(self.docker, self.config, goal, self.folder).id
        except Exception:
            self.cut_off = False  # the engine answered: it made nothing
            raise
        self.cut_off = False
        return made

    def _remove_container(self) -> None:
        target, self.container_id = self.container_id or self.name, None
        if target is not None:
            try:
                if self.cut_off:
                    self._await_container(target)
                lifecycle.remove(self.docker, target)
            except (DockerException, OSError) as exc:  # the engine may be gone; `sandbox prune` is the way back
                self.note(
                    f"warning: the sandbox container {self.name or target} was not removed "
                    f"({engine.first_line(exc)}); `nanocode sandbox prune` removes it"
                )
        self.cut_off = False

    def _await_container(self, name: str) -> None:
        """Until the engine has made the container of a create that was cut off, or for CUT_OFF_WAIT."""
        deadline = time.monotonic() + CUT_OFF_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(NotFound):
                self.docker.api.inspect_container(name)
                return
            time.sleep(0.05)

    def _stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        self._remove_container()
        self.name = None
        folder, self.folder = self.folder, None
        if folder is not None:
            channel.remove_folder(folder)

    def _obituary(self, exc: ChannelClosed) -> str:
        if isinstance(exc, MalformedReply):
            return f"the sandbox sent a malformed reply ({exc}). {prompts.SANDBOX_RESTARTED}"
        reason = f"the sandbox stopped answering ({exc})"
        try:
            assert self.container_id is not None
            # The socket may tell of a death before the engine has taken note of it.
            for _ in range(20 if isinstance(exc, RuntimeExited) else 1):
                state = self.docker.api.inspect_container(self.container_id)["State"]
                if not state.get("Running"):
                    break
                time.sleep(0.1)
            if self._out_of_memory(state):
                reason = f"out of memory (limit {self.config.memory}); the sandbox container died"
            elif not state.get("Running"):
                reason = f"the sandbox container stopped (exit code {state.get('ExitCode')})"
        except (NotFound, AssertionError, KeyError):
            reason = "the sandbox container is gone"
        except Exception:  # the engine itself may be gone
            reason = "the Docker engine stopped answering"
        return f"{reason}. {prompts.SANDBOX_RESTARTED}"

    def _live(self) -> RuntimeClient:
        self.began = time.time()  # an obituary tells what happened since the call began
        return super()._live()

    def _out_of_memory(self, state: dict[str, Any]) -> bool:
        """Whether the container died for memory during the call that saw it die. State.OOMKilled
        alone cannot tell: it stays set after any OOM kill in the container, even of an earlier
        command that the runtime outlived. The kernel kills with SIGKILL (so the init exits 137), and
        the engine logs an oom event, a while after the kill (seconds on a busy machine), even after
        the death it caused. So soon after a command's OOM kill that the runtime reported, an event
        may be that kill's: then nothing is claimed."""
        if not state.get("OOMKilled") or state.get("ExitCode") != 128 + 9:
            return False
        try:
            died = datetime.fromisoformat(state["FinishedAt"]).timestamp()  # the engine's clock, taken to be ours
            container, reported = self.oom_reported
            if container == self.container_id and died - reported < OOM_EVENT_LAG:
                return False
            filters = {"container": self.container_id, "event": "oom"}
            since, until = min(self.began, died), died + OOM_EVENT_LAG
            events = self.docker.api.events(since=f"{since:.9f}", until=f"{until:.9f}", filters=filters, decode=True)
            try:
                return next(iter(events), None) is not None  # the stream waits for one until `until`
            finally:
                events.close()
        except (DockerException, KeyError, TypeError, ValueError):
            return True  # the engine will not say more: the flag and the exit code are all there is

    def run(self, command: str, timeout: float, watch: Watch | None = None) -> CommandResult:
        result = super().run(command, timeout, watch)
        if result.killed == "out of memory":
            result.killed = f"out of memory (limit {self.config.memory})"
            self.oom_reported = (self.container_id, time.time())
        return result


class _FolderRefused(Exception):
    """The engine refused the mount of the socket folder."""
