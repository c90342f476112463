"""The host executor: tools act directly on this machine, in the project directory."""

import contextlib
import os
import select
import stat
import subprocess
import sys
import tempfile

from nanocode.runtime.client import BOOTSTRAP, NON_INTERACTIVE, ChannelClosed, MalformedReply, RuntimeClient
from nanocode.runtime.executor import RuntimeExecutor
from nanocode.runtime.server import SHELLS_PREFIX, kill_tree


def command_environment(secrets: list[str]) -> dict[str, str]:
    """The host environment less anything that carries a secret of nanocode's."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("OPENROUTER_API_KEY", "NANOCODE_API_KEY") and value not in secrets
    }
    env.update(NON_INTERACTIVE)
    return env


class PipeTransport:
    def __init__(self, process: subprocess.Popen[bytes]):
        assert process.stdin and process.stdout
        self.process = process
        self._in = process.stdin.fileno()
        self._out = process.stdout.fileno()

    def send(self, data: bytes) -> None:
        os.write(self._in, data)

    def recv(self, timeout: float) -> bytes:
        if not select.select([self._out], [], [], timeout)[0]:
            raise TimeoutError
        return os.read(self._out, 1 << 16)

    def close(self) -> None:
        # The end of its input first: the runtime stops what it started and removes its folder of
        # named pipes; a kill of its tree where it does not end at once.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=1.0)
        if self.process.poll() is None:
            kill_tree(self.process.pid)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()


class HostExecutor(RuntimeExecutor):
    """The runtime as a local subprocess, in a session of its own."""

    def __init__(self, project: str, output_cap: int, secrets: list[str]):
        self.project = project
        self.output_cap = output_cap
        self.secrets = secrets
        super().__init__()

    def _start(self) -> RuntimeClient:
        process = subprocess.Popen(
            [sys.executable, *BOOTSTRAP[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.project,
            env=command_environment(self.secrets),
            # Ctrl-C reaches nanocode alone, which then stops everything in order.
            start_new_session=True,
        )
        return RuntimeClient(PipeTransport(process), self.project, self.output_cap, source=self.source)

    def close(self) -> None:
        shells = self.runtime.hello.get("shells") if self.runtime is not None else None
        super().close()
        if isinstance(shells, str):
            remove_shells_folder(shells)

    def _stop(self) -> None:
        pass  # closing the runtime's transport ended its process tree

    def _obituary(self, exc: ChannelClosed) -> str:
        what = "sent a malformed reply" if isinstance(exc, MalformedReply) else "died"
        return (
            f"the tool runtime {what} ({exc}). A fresh one is started for the next call; "
            "processes that earlier commands left in the background may still be running."
        )


def remove_shells_folder(path: str) -> None:
    """What a runtime killed before it could clean up leaves: its folder of named pipes in the
    temporary folder (SHELLS_PREFIX), with what a late shell made there. What is not a folder is
    removed through the folder's handle (a symlink as itself), and nothing anywhere else."""
    parent, name = os.path.split(path)
    if parent != tempfile.gettempdir() or not name.startswith(SHELLS_PREFIX) or "/" in name:
        return
    with contextlib.suppress(OSError):
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for entry in os.listdir(folder):
                if not stat.S_ISDIR(os.stat(entry, dir_fd=folder, follow_symlinks=False).st_mode):
                    os.unlink(entry, dir_fd=folder)
        finally:
            os.close(folder)
        os.rmdir(path)
