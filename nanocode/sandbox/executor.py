"""The sandbox executor: every tool call of a goal runs in that goal's container."""

import contextlib
from collections.abc import Callable

import docker
from docker.errors import DockerException, ImageNotFound
from docker.models.containers import Container

from nanocode import prompts
from nanocode.errors import ConfigError, FileOpError
from nanocode.interfaces import CommandResult
from nanocode.runtime.client import ChannelClosed, RuntimeClient
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.channel import SocketTransport
from nanocode.sandbox.container import SandboxConfig


class SandboxExecutor:
    """Starts the goal's container on creation; close() removes it.

    If the container dies (out of memory, killed), the call that saw it says so,
    and the next call starts a fresh container.
    """

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
        self.container: Container | None = None
        self.runtime: RuntimeClient | None = None
        self._start()

    def _start(self) -> RuntimeClient:
        try:
            self.container = lifecycle.create(self.docker, self.config)
        except ImageNotFound:
            raise ConfigError(f"the sandbox image {self.config.image} is not present") from None
        except DockerException as exc:
            raise ConfigError(f"cannot create the sandbox container: {_first_line(exc)}") from None
        transport: SocketTransport | None = None
        try:
            # Attached before the start, so that nothing the runtime says is missed.
            transport = SocketTransport(
                self.docker.api.attach_socket(
                    self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
                )
            )
            self.container.start()
            self.runtime = RuntimeClient(transport, self.config.project, self.output_cap)
            c = self.config
            self.note(
                f"sandbox {self.container.name}: {c.image}, memory {c.memory}, {c.cpus:g} CPUs, "
                f"{c.pids} processes, network {c.network}"
            )
        except (DockerException, ChannelClosed, OSError) as exc:
            detail = bytes(transport.stderr).decode(errors="replace").strip() if transport else ""
            self.close()
            raise ConfigError(
                f"the sandbox did not start in image {self.config.image}: {detail or _first_line(exc)} "
                "(the image needs python3 and bash or sh; see README)"
            ) from None
        return self.runtime

    def _live(self) -> RuntimeClient:
        if self.runtime is None:
            self.close()
            return self._start()
        return self.runtime

    def _died(self, exc: ChannelClosed) -> str:
        """Why the channel closed, in words for the model; the container is then discarded."""
        reason = f"the sandbox stopped answering ({exc})"
        try:
            assert self.container is not None
            self.container.reload()
            state = self.container.attrs["State"]
            if state.get("OOMKilled"):
                reason = f"out of memory (limit {self.config.memory}); the sandbox container died"
            elif not state.get("Running"):
                reason = f"the sandbox container stopped (exit code {state.get('ExitCode')})"
        except (DockerException, AssertionError, KeyError):
            reason = "the sandbox container is gone"
        self.close()
        return f"{reason}. {prompts.SANDBOX_RESTARTED}"

    def run(self, command: str, timeout: float) -> CommandResult:
        runtime = self._live()
        try:
            result = runtime.run(command, timeout)
        except ChannelClosed as exc:
            return CommandResult("", "", None, killed=self._died(exc))
        if result.killed:
            result.killed = f"{result.killed} (limit {self.config.memory})"
        return result

    def read_file(self, path: str) -> str:
        runtime = self._live()
        try:
            return runtime.read_file(path)
        except ChannelClosed as exc:
            raise FileOpError(self._died(exc)) from None

    def write_file(self, path: str, content: str) -> None:
        runtime = self._live()
        try:
            runtime.write_file(path, content)
        except ChannelClosed as exc:
            raise FileOpError(self._died(exc)) from None

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.container is not None:
            with contextlib.suppress(DockerException):
                lifecycle.remove(self.docker, self.container.id)
            self.container = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
