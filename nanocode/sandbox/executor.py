"""The sandbox executor: every tool call of a goal runs in that goal's container."""

import contextlib
import time
import uuid
from collections.abc import Callable

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from nanocode import prompts
from nanocode.errors import ConfigError
from nanocode.interfaces import CommandResult
from nanocode.runtime.client import ChannelClosed, RuntimeClient, RuntimeExited
from nanocode.runtime.executor import RuntimeExecutor
from nanocode.sandbox import channel, protect
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.channel import SocketTransport
from nanocode.sandbox.container import SandboxConfig


class SandboxExecutor(RuntimeExecutor):
    """The runtime as the main process of a container made for the goal; close() removes the container."""

    def __init__(
        self,
        client: docker.DockerClient,
        config: SandboxConfig,
        output_cap: int,
        note: Callable[[str], None] = lambda text: None,
    ):
        self.docker = client
        self.config = config
        self.output_cap = output_cap
        self.note = note
        self.name: str | None = None  # of the current container, known before it exists
        self.container_id: str | None = None
        self.folder: str | None = None  # shared with the container, for the runtime's socket
        self.watched = protect.watched(config.project) if config.mounts is None else []
        super().__init__()

    def _start(self) -> RuntimeClient:
        goal = uuid.uuid4().hex[:12]
        self.name = f"nanocode-{goal}"
        with contextlib.suppress(OSError):  # without it, the attach stream carries the requests
            self.folder = channel.make_folder(goal)
        runtime = None
        if self.folder is not None:
            try:
                runtime = self._launch(goal)
            except ImageNotFound:
                pass  # said below
            except DockerException:
                # An engine that cannot see the folder (in a VM, on another machine, with a /tmp of its
                # own) refuses it, when the container is made or when it starts: it is made again
                # without it, and the attach stream carries the requests.
                self._remove_container()
                channel.remove_folder(self.folder)
                self.folder = None
        if runtime is None:
            runtime = self._launch(goal, wrap_errors=True)
        c = self.config
        self.note(
            f"sandbox {self.name}: {c.image}, memory {c.memory}, {c.cpus:g} CPUs, "
            f"{c.pids} processes, network {c.network}"
        )
        return runtime

    def _launch(self, goal: str, wrap_errors: bool = False) -> RuntimeClient:
        """Makes the container, attaches to it and starts the runtime in it; the engine's refusals
        pass through unless `wrap_errors`, when they become one line for the user."""
        try:
            self.container_id = lifecycle.create(self.docker, self.config, goal, self.folder).id
        except ImageNotFound:
            raise ConfigError(f"the sandbox image {self.config.image} is not present") from None
        except DockerException as exc:
            if not wrap_errors:
                raise
            raise ConfigError(f"cannot create the sandbox container: {_first_line(exc)}") from None
        transport: SocketTransport | None = None
        try:
            # Attached before the start, so that nothing the runtime says is missed.
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            transport = SocketTransport(self.docker.api.attach_socket(self.container_id, params=params))
            self.docker.api.start(self.container_id)
            runtime = RuntimeClient(transport, self.config.project, self.output_cap)
            if self.folder is not None:
                channel.go_direct(runtime, transport, self.folder)
        except DockerException:
            if transport is not None:
                transport.close()
            if not wrap_errors:
                raise
            raise ConfigError(self._did_not_start(transport, "the engine refused to start it")) from None
        except (ChannelClosed, OSError) as exc:
            message = self._did_not_start(transport, _first_line(exc))
            if transport is not None:
                transport.close()
            raise ConfigError(message) from None
        return runtime

    def _did_not_start(self, transport: SocketTransport | None, reason: str) -> str:
        detail = bytes(transport.stderr).decode(errors="replace").strip() if transport else ""
        return (
            f"the sandbox did not start in image {self.config.image}: {detail or reason} "
            "(the image needs python3 and bash or sh; see README)"
        )

    def _remove_container(self) -> None:
        target, self.container_id = self.container_id or self.name, None
        if target is not None:
            with contextlib.suppress(Exception):  # the engine may be gone; `sandbox prune` is the way back
                lifecycle.remove(self.docker, target)

    def _stop(self) -> None:
        started = self.name is not None
        self._remove_container()
        self.name = None
        folder, self.folder = self.folder, None
        if folder is not None:
            channel.remove_folder(folder)
        if not started:
            return
        for path in protect.quarantine(self.watched):
            self.note(
                f"warning: the sandbox made {path.removesuffix(protect.QUARANTINE)}, which host git would "
                f"have read; it was moved to {path}"
            )

    def _obituary(self, exc: ChannelClosed) -> str:
        reason = f"the sandbox stopped answering ({exc})"
        try:
            assert self.container_id is not None
            # The socket may tell of a death before the engine has taken note of it.
            for _ in range(20 if isinstance(exc, RuntimeExited) else 1):
                state = self.docker.api.inspect_container(self.container_id)["State"]
                if not state.get("Running"):
                    break
                time.sleep(0.1)
            if state.get("OOMKilled"):
                reason = f"out of memory (limit {self.config.memory}); the sandbox container died"
            elif not state.get("Running"):
                reason = f"the sandbox container stopped (exit code {state.get('ExitCode')})"
        except (NotFound, AssertionError, KeyError):
            reason = "the sandbox container is gone"
        except Exception:  # the engine itself may be gone
            reason = "the Docker engine stopped answering"
        return f"{reason}. {prompts.SANDBOX_RESTARTED}"

    def run(self, command: str, timeout: float) -> CommandResult:
        result = super().run(command, timeout)
        if result.killed == "out of memory":
            result.killed = f"out of memory (limit {self.config.memory})"
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
