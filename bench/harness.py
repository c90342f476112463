"""What every section of the benchmark shares: the engine, the arguments, the report, the clean-up, a
project, the sandbox image and its executors."""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import docker
from common import (
    OUTPUT_CAP,
    Cleanup,
    Report,
    discard,
    expect,
)

from nanocode.host import HostExecutor
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
from nanocode.sandbox.image import ensure_image
from nanocode.sandbox.protect import project_mounts


class Bench:
    def __init__(self, client: docker.DockerClient, args: argparse.Namespace, report: Report, cleanup: Cleanup):
        self.client = client
        self.args = args
        self.report = report
        self.cleanup = cleanup
        self.reps: int = args.reps
        self.warmup: int = args.warmup
        self.project = tempfile.mkdtemp(prefix="nanocode-bench-")
        self.cleanup.push(lambda: shutil.rmtree(self.project, ignore_errors=True))
        self.image = ensure_image(client, lambda line: print(line, file=sys.stderr))
        self.config = SandboxConfig(project=self.project, image=self.image, mounts=project_mounts(self.project))
        self.report.settings["image"] = self.image
        for name in ("a.txt", "b.txt", "c.py"):
            Path(self.project, name).write_text(name + "\n")
        self._goal_sandbox: SandboxExecutor | None = None
        self._goal_host: HostExecutor | None = None

    def sandbox(self, output_cap: int = OUTPUT_CAP) -> SandboxExecutor:
        executor = SandboxExecutor(self.client, self.config, output_cap)
        self.cleanup.push(executor.close)
        return executor

    def host(self) -> HostExecutor:
        executor = HostExecutor(self.project, OUTPUT_CAP, [])
        self.cleanup.push(executor.close)
        return executor

    def exec_container(self) -> Any:
        """A container made by nanocode's own create(), started; its runtime idles, waiting on stdin."""
        item = lifecycle.create(self.client, self.config, "bench-exec")
        self.cleanup.push(lambda: discard(self.client, item.id))
        item.start()
        item.reload()
        expect(item.status == "running", f"the exec baseline container is {item.status}")
        return item

    def goal_sandbox(self) -> SandboxExecutor:
        """One goal's sandbox, shared by sections 1, 2, 5 and 6 as it would serve a goal's tool calls."""
        if self._goal_sandbox is None:
            self._goal_sandbox = self.sandbox()
        return self._goal_sandbox

    def goal_host(self) -> HostExecutor:
        if self._goal_host is None:
            self._goal_host = self.host()
        return self._goal_host

    def end_goal(self) -> None:
        if self._goal_sandbox is not None:
            self._goal_sandbox.close()
            self._goal_sandbox = None
