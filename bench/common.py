"""What every section of the benchmark shares: figures, targets, the report, clean-up, a scripted endpoint."""

import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import docker
from docker.errors import DockerException, NotFound

from nanocode.interfaces import CommandResult, Completion, Message
from nanocode.model.openai import OpenAIModel
from nanocode.prompts import MARKER
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.container import SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_CAP = 50_000  # nanocode's default --output-cap
FILE_SIZE = 100_000
FILE_CAP = 2 * FILE_SIZE  # read_file returns at most the output cap: room for the whole file
BIG_OUTPUT = 10_000_000
BIG_COMMAND = "head -c 10000000 /dev/zero | tr '\\0' a"
SLEEP_TIMEOUT = 1.0
# Quiet before each call in 1-2 (see the note there).
PAUSE = 0.02
# The counting shell prints its own pid ($$ would be the runtime's shell server), then every process.
COUNT_COMMAND = "echo $BASHPID; ps -e -o pid=,ppid=,stat=,comm="

T = TypeVar("T")


# ---------------------------------------------------------------------------- figures


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Figure:
    section: str
    label: str
    unit: str  # "ms", "MB" or "" (a count)
    samples: list[float]  # in the unit
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 0.9)

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "label": self.label,
            "unit": self.unit,
            "n": len(self.samples),
            "median": self.median,
            "p90": self.p90,
            "mean": statistics.fmean(self.samples),
            "min": min(self.samples),
            "max": max(self.samples),
            "note": self.note,
        }


@dataclass
class Target:
    label: str
    value: float
    op: str  # "<=", ">=" or "<"
    limit: float
    unit: str
    basis: str  # how the value was formed

    @property
    def passed(self) -> bool:
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == ">=":
            return self.value >= self.limit
        return self.value < self.limit

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "op": self.op,
            "limit": self.limit,
            "unit": self.unit,
            "basis": self.basis,
            "pass": self.passed,
        }


@dataclass
class Report:
    machine: dict[str, str]
    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, label: str, unit: str, samples: list[float], note: str = "") -> Figure:
        figure = Figure(section, label, unit, samples, note)
        self.figures.append(figure)
        return figure

    def target(self, label: str, value: float, op: str, limit: float, unit: str, basis: str) -> None:
        self.targets.append(Target(label, value, op, limit, unit, basis))

    def in_order(self) -> None:
        """Sections in the order of their numbers, whatever order they were measured in."""
        self.figures.sort(key=lambda figure: int(figure.section.split(".")[0].split("-")[0]))
        self.targets.sort(key=lambda target: int(target.label[1 : target.label.index(")")]))


def ms(seconds: list[float]) -> list[float]:
    return [s * 1000 for s in seconds]


def interleaved(
    variants: dict[str, Callable[[], object]], reps: int, warmup: int, pause: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per call of each variant, called round robin, each call after `pause` seconds of
    quiet; the warm-up rounds are not kept."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + reps):
        for name, call in variants.items():
            time.sleep(pause)
            started = time.perf_counter()
            call()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                samples[name].append(elapsed)
    return samples


def timed(call: Callable[[], T], check: Callable[[T], None], reps: int, warmup: int) -> list[float]:
    """Seconds per call; each result is checked outside the timed span."""
    samples = []
    for round_ in range(warmup + reps):
        started = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - started
        check(result)
        if round_ >= warmup:
            samples.append(elapsed)
    return samples


class BenchError(Exception):
    """A measured operation did not do what it should: the figure would be meaningless."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(what)


def ok_result(expected_stdout: str | None = None) -> Callable[[CommandResult], None]:
    def check(result: CommandResult) -> None:
        if result.killed:
            # Seen when something else removed the container, such as a test run's cleanup on the same engine.
            raise BenchError(f"the command was killed: {result.killed.split('. ')[0]}")
        expect(result.exit_code == 0 and not result.timed_out, f"command failed: {result!r:.300}")
        if expected_stdout is not None:
            expect(expected_stdout in result.stdout, f"unexpected output: {result.stdout!r:.300}")

    return check


# ---------------------------------------------------------------------------- the machine


def machine(client: docker.DockerClient) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        info = client.info()
        version = str(client.version().get("Version", "unknown"))
        cgroup = f"cgroup v{info.get('CgroupVersion', '?')}, {info.get('Driver', '?')}"
    except DockerException:
        version, cgroup = "unknown", "?"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "docker": f"{version} ({cgroup})",
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


# ---------------------------------------------------------------------------- containers


class CreateArguments:
    """Stands in for a DockerClient so that nanocode's own create() says how it configures a container."""

    def __init__(self) -> None:
        self.containers = self
        self.kwargs: dict[str, Any] = {}

    def create(self, image: str, **kwargs: Any) -> None:
        self.kwargs = {"image": image, **kwargs}


def sandbox_arguments(config: SandboxConfig) -> dict[str, Any]:
    """Exactly what nanocode passes to containers.create for this config (limits, hardening, mounts, labels)."""
    spy = CreateArguments()
    lifecycle.create(cast(docker.DockerClient, spy), config, "bench")
    return dict(spy.kwargs)


def discard(client: docker.DockerClient, container_id: str) -> None:
    with contextlib.suppress(NotFound):
        client.api.remove_container(container_id, force=True)


class Cleanup:
    """Everything the benchmark started, taken down in reverse order, once, whatever happened."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._undo: list[Callable[[], None]] = []

    def push(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def run(self) -> list[str]:
        """Returns the names of containers found left over (and removed)."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self._undo:
                with contextlib.suppress(Exception):
                    self._undo.pop()()
            return self.sweep()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def sweep(self) -> list[str]:
        """Removes any container labelled as started by this process (a run interrupted half-way)."""
        filters = {
            "label": [
                f"{lifecycle.LABEL}.owner.pid={os.getpid()}",
                f"{lifecycle.LABEL}.owner.host={socket.gethostname()}",
            ]
        }
        removed = []
        with contextlib.suppress(DockerException):
            for row in self.client.api.containers(all=True, filters=filters):
                with contextlib.suppress(DockerException):
                    discard(self.client, row["Id"])
                    removed.append(str((row.get("Names") or [row["Id"][:12]])[0]).lstrip("/"))
        return removed


# ---------------------------------------------------------------------------- the benchmark


class NullExecutor:
    """An executor whose tools do nothing and return at once: the agent loop alone is measured."""

    def run(self, command: str, timeout: float) -> CommandResult:
        return CommandResult("", "", 0)

    def read_file(self, path: str, lines: tuple[int, int] | None = None) -> str:
        return ""

    def write_file(self, path: str, content: str) -> None:
        pass

    def close(self) -> None:
        pass


class TimedModel:
    """Wraps the real model client and notes when each call starts and ends."""

    def __init__(self, inner: OpenAIModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.starts: list[float] = []
        self.ends: list[float] = []

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion:
        started = time.perf_counter()
        completion = self.inner.complete(messages, tools)
        self.ends.append(time.perf_counter())
        self.starts.append(started)
        return completion


# The scripted endpoint, in a process of its own so that its JSON decoding of every request does not
# share this process's GIL. It keeps no request (ScriptedAPI would keep all 1000 growing bodies, and
# its garbage collector would then slow every request down), and it times its own handling of each:
# from do_POST's start (the request line and headers read) to the reply written.
SERVER = """
import json, sys, time
from tests.scripted_api import ScriptedAPI, call, message, tools

class Discard(list):
    def append(self, item):
        pass

api = ScriptedAPI()
api.requests, api.headers = Discard(), Discard()
handler = api.server.RequestHandlerClass
handle = handler.do_POST
spent = []

def do_post(self):
    started = time.perf_counter()
    handle(self)
    spent.append((started, time.perf_counter() - started))

handler.do_POST = do_post
api.start()
if len(sys.argv) > 3:  # "LIMIT:CHARS": a window the server enforces as llama.cpp does, counting its own way
    from tests.scripted_api import Reply
    limit, api.chars_per_token = map(int, sys.argv[3].split(":"))
    api.context_limit = limit
    said = "the request exceeds the available context size, try increasing it"
    api.refusal = lambda n_ctx, n: Reply({"error": {"code": 400, "message": said, "type": "exceed_context_size_error",
                                                    "n_prompt_tokens": n, "n_ctx": n_ctx}}, status=400)
for part in sys.argv[1].split(","):
    if part == "F":
        api.add(message(sys.argv[2] + ": done"))
    else:
        api.add(*[tools(call("shell", {"command": "true"})) for _ in range(int(part))])
print(api.url, flush=True)
for _ in sys.stdin:  # each line asks for the timings so far; the end of input stops the server
    print(json.dumps([seconds for _, seconds in sorted(spent)]), flush=True)
api.stop()
"""


class ScriptedServer:
    """ScriptedAPI run by SERVER. The script "20,F,33": 20 tool-call replies, a final answer, 33 tool-call replies;
    `enforce` "8192:2": a window of 8,192 tokens, counted two characters a token, refused past it."""

    def __init__(self, script: str, enforce: str = "") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, script, MARKER, *([enforce] if enforce else [])],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        self.url = self._stdout.readline().strip()
        expect(self.url.startswith("http://127.0.0.1:"), f"the scripted server did not start: {self.url!r}")

    def handling(self) -> list[float]:
        """Seconds the server spent on each request so far, in order."""
        self._stdin.write("\n")
        self._stdin.flush()
        return [float(value) for value in json.loads(self._stdout.readline())]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
