"""nanocode's benchmark: what a tool call, a sandbox and the agent loop cost, against the usual baselines.

    make bench ARGS="[--quick] [--json PATH] [--only DIGITS]"   (the project's venv)
    python bench/bench.py [--quick] [--json PATH] [--only DIGITS]

Every figure is the median and p90 (nearest rank) of its repetitions, taken after a warm-up, and
every target is judged on figures of the same run. Variants that are compared with each other are
measured interleaved (round robin), so that drift of the machine hits both sides alike.

Every container the benchmark starts carries the owner labels of nanocode (this process's pid);
whatever happens, Ctrl-C and SIGTERM included, the benchmark removes them before it exits.
"""

import argparse
import contextlib
import importlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import requests
from common import (
    BIG_COMMAND,
    BIG_OUTPUT,
    COUNT_COMMAND,
    FILE_CAP,
    FILE_SIZE,
    OUTPUT_CAP,
    PAUSE,
    SLEEP_TIMEOUT,
    BenchError,
    Cleanup,
    Figure,
    NullExecutor,
    Report,
    ScriptedServer,
    TimedModel,
    discard,
    expect,
    interleaved,
    machine,
    ms,
    ok_result,
    others_on_engine,
    sandbox_arguments,
    timed,
)
from docker.errors import DockerException

from nanocode import prompts
from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.display import QuietDisplay
from nanocode.errors import NanocodeError
from nanocode.host import HostExecutor
from nanocode.interfaces import CommandResult, Message, Model
from nanocode.model.openai import OpenAIModel
from nanocode.prompts import MARKER
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox import engine
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
from nanocode.sandbox.image import ensure_image
from nanocode.sandbox.protect import project_mounts
from nanocode.transcript import Transcript

# Sections 9 on are modules of their own beside this one, each with a `section(bench)` function;
# --only names them.
SECTIONS: dict[str, str] = {
    "workspace": "workspace",
    "batch": "batch",
    "context": "context",
    "egress": "egress",
}


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

    # -- 1, 2: one command

    def commands(self, sandbox: SandboxExecutor, host: HostExecutor) -> None:
        section = "1-2. one command: executor.run(cmd, 30) against one docker exec per command"
        baseline = self.exec_container()
        inside: dict[str, list[float]] = {}

        def run(
            name: str, executor: HostExecutor | SandboxExecutor, command: str, expected: str | None
        ) -> Callable[[], None]:
            check = ok_result(expected)
            inside[name] = []

            def call() -> None:
                result = executor.run(command, 30.0)
                check(result)
                inside[name].append(result.duration)

            return call

        def docker_exec(command: str, expected: str | None) -> Callable[[], None]:
            def call() -> None:
                code, (out, err) = baseline.exec_run(["bash", "-c", command], demux=True)
                expect(code == 0, f"docker exec {command!r} exited {code}: {err!r:.200}")
                if expected is not None:
                    expect(expected in (out or b"").decode(), f"docker exec {command!r} printed {out!r:.200}")

            return call

        variants: dict[str, Callable[[], object]] = {}
        for command, expected in (("true", None), ("ls", "c.py")):
            variants[f"host: {command}"] = run(f"host: {command}", host, command, expected)
            variants[f"sandbox: {command}"] = run(f"sandbox: {command}", sandbox, command, expected)
            variants[f"docker exec: {command}"] = docker_exec(command, expected)
        try:
            samples = interleaved(variants, self.reps, self.warmup, PAUSE)
        finally:
            discard(self.client, baseline.id)
        figures = {name: self.report.add(section, name, "ms", ms(values)) for name, values in samples.items()}
        for name, durations in inside.items():
            self.report.add(
                section,
                f"  {name}, of which in the runtime",
                "ms",
                ms(durations[-self.reps :]),
                "the reply's duration: spawn, command, collection",
            )
        self.report.notes.append(
            "docker exec: container.exec_run(['bash', '-c', cmd], demux=True), i.e. exec_create + exec_start + "
            "exec_inspect, in a running container made by nanocode's own create() (same image, limits, hardening)."
        )
        self.report.notes.append(
            f"1-2: every call comes after {PAUSE * 1000:.0f} ms of quiet, as a tool call comes after the model's "
            "reply; without it, the engine's clean-up after each `docker exec` (it goes on after exec_inspect "
            "returns) runs during the next variant's call and is counted there."
        )
        for command in ("true", "ls"):
            host_f, sandbox_f = figures[f"host: {command}"], figures[f"sandbox: {command}"]
            ratio = sandbox_f.median / host_f.median
            self.report.target(f"(1) sandbox / host, {command}", ratio, "<=", 1.5, "x", "ratio of medians")
        for command in ("true", "ls"):
            sandbox_f, exec_f = figures[f"sandbox: {command}"], figures[f"docker exec: {command}"]
            ratio = exec_f.median / sandbox_f.median
            self.report.target(f"(2) docker exec / sandbox, {command}", ratio, ">=", 30, "x", "ratio of medians")
        self.floors(section, sandbox, figures["docker exec: ls"])

    def floors(self, section: str, sandbox: SandboxExecutor, exec_ls: Figure) -> None:
        """What no way of running a command in the sandbox can go below: the channel's round trip,
        and a shell's own fork and exec of `ls` in the same container."""

        runtime = sandbox.runtime
        if runtime is None:
            raise BenchError("the sandbox has no runtime")

        def ping() -> None:
            expect(runtime.request("ping", 10.0)["ok"], "the runtime did not answer a ping")

        trips = interleaved({"ping": ping}, self.reps, self.warmup, PAUSE)["ping"]
        trip = self.report.add(section, "  sandbox: the channel's round trip (ping)", "ms", ms(trips))
        timing = "s=$EPOCHREALTIME; ls > /dev/null; echo $s $EPOCHREALTIME"
        per_ls = []
        for round_ in range(self.warmup + self.reps):
            time.sleep(PAUSE)
            result = sandbox.run(timing, 30.0)
            ok_result()(result)
            begin, end = (float(value) for value in result.stdout.split())
            if round_ >= self.warmup:
                per_ls.append(end - begin)
        inside = self.report.add(
            section, "  sandbox: ls alone, timed by its shell", "ms", ms(per_ls), "fork, exec, wait"
        )
        self.report.notes.append(
            f"floor for (2), ls: docker exec ls / (round trip + ls run inside) = {exec_ls.median:.1f} / "
            f"({trip.median:.2f} + {inside.median:.2f}) = {exec_ls.median / (trip.median + inside.median):.1f}x, "
            "for a runtime that costs nothing."
        )

    # -- 3: files

    def files(self) -> None:
        section = "3. files of 100 KB through the sandbox"
        executor = self.sandbox(FILE_CAP)
        rng = random.Random(1)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,;:()[]{}=+-*/"
        lines, size = [], 0
        while size < FILE_SIZE:
            line = "".join(rng.choice(alphabet) for _ in range(79)) + "\n"
            lines.append(line)
            size += len(line)
        content = "".join(lines)[:FILE_SIZE]
        host_path = Path(self.project, "data", "big.txt")

        def written(_: None) -> None:
            expect(host_path.read_bytes() == content.encode(), "write_file: the file on disk differs")

        def read_back(text: str) -> None:
            expect(text == content, f"read_file: got {len(text)} characters that differ from the {FILE_SIZE} written")

        write = timed(lambda: executor.write_file("data/big.txt", content), written, self.reps, self.warmup)
        read = timed(lambda: executor.read_file("data/big.txt"), read_back, self.reps, self.warmup)
        write_f = self.report.add(section, "write_file 100 KB", "ms", ms(write), "checked on the host after each")
        read_f = self.report.add(section, "read_file 100 KB", "ms", ms(read), "compared with what was written")
        executor.close()
        self.report.target("(3) write_file 100 KB", write_f.median, "<=", 5, "ms", "median")
        self.report.target("(3) read_file 100 KB", read_f.median, "<=", 5, "ms", "median")

    # -- 4: a goal's sandbox up and down

    def lifecycle(self) -> None:
        section = "4. a goal's sandbox up and down"
        bare = sandbox_arguments(self.config)
        bare.pop("stdin_open", None)
        image = bare.pop("image")

        def up_down() -> None:
            executor = SandboxExecutor(self.client, self.config, OUTPUT_CAP)
            executor.close()

        def docker_run() -> None:
            arguments = {**bare, "name": f"nanocode-bench-{uuid.uuid4().hex[:12]}", "command": ["true"]}
            self.client.containers.run(image, remove=True, **arguments)

        samples = interleaved({"up_down": up_down, "docker_run": docker_run}, self.reps, self.warmup)
        ours = self.report.add(section, "SandboxExecutor(...) then .close()", "ms", ms(samples["up_down"]))
        base = self.report.add(
            section,
            "docker run --rm (same config) true",
            "ms",
            ms(samples["docker_run"]),
            "containers.run(image, ['true'], remove=True) with the arguments of nanocode's create()",
        )
        self.report.target(
            "(4) sandbox up+down / docker run --rm", ours.median / base.median, "<=", 1.3, "x", "ratio of medians"
        )

    # -- 5: a command past its timeout

    def timeout(self, sandbox: SandboxExecutor) -> None:
        section = f"5. `sleep 1000` with a {SLEEP_TIMEOUT:g} s timeout, in the sandbox"
        reps, warmup = self.args.timeout_reps, 1
        times, left, zombies, lines = [], [], [], []
        for round_ in range(warmup + reps):
            started = time.perf_counter()
            result = sandbox.run("sleep 1000", SLEEP_TIMEOUT)
            elapsed = time.perf_counter() - started
            expect(result.timed_out, f"sleep 1000 did not time out: {result!r:.300}")
            live, dead, described = self.leftovers(sandbox)
            if round_ >= warmup:
                times.append(elapsed)
                left.append(float(live))
                zombies.append(float(dead))
                lines.extend(described)
        back = self.report.add(section, "time until the result is back", "ms", ms(times), f"{reps} reps (each ≥ 1 s)")
        live_f = self.report.add(section, "processes left (live)", "", left, "counted right after each")
        dead_f = self.report.add(section, "processes left (zombies)", "", zombies)
        if lines:
            self.report.notes.append("left after a timeout: " + "; ".join(sorted(set(lines))))
        self.report.notes.append(
            "processes left: the container's `ps -e` taken by a command right after the timed-out one, less "
            "PID 1 (docker-init) and the runtime (the chain from PID 1 to the counting shell), the counting shell "
            "itself and its child ps, and the runtime's shell server with the idle shells it keeps ready (from "
            "the runtime's `ping`); zombies are counted apart."
        )
        self.report.target("(5) back within timeout + 200 ms", back.p90, "<=", SLEEP_TIMEOUT * 1000 + 200, "ms", "p90")
        self.report.target(
            "(5) processes left after a timeout", max(live_f.samples) + max(dead_f.samples), "<=", 0, "", "worst rep"
        )

    @staticmethod
    def leftovers(executor: SandboxExecutor) -> tuple[int, int, list[str]]:
        """Live and zombie processes in the container that are neither the runtime's nor the counting command's."""
        result = executor.run(COUNT_COMMAND, 30.0)
        ok_result()(result)
        first, *rows = result.stdout.splitlines()
        shell = int(first)
        table: dict[int, tuple[int, str, str]] = {}
        for row in rows:
            pid, ppid, stat, comm = row.split(None, 3)
            table[int(pid)] = (int(ppid), stat, comm)
        # The runtime's shell server and the shells it forked ahead for the next commands (with any
        # fork still under way) are not leftovers.
        assert executor.runtime is not None
        ready = set(executor.runtime.request("ping", 10.0).get("ready", []))
        excluded = {shell} | _ancestors(table, shell) | _descendants(table, shell) | ready
        for pid in ready:
            excluded |= _descendants(table, pid)
        others = {pid: row for pid, row in table.items() if pid not in excluded}
        dead = sum(1 for _, stat, _ in others.values() if stat.startswith("Z"))
        described = [f"{comm} ({stat}, parent {ppid})" for ppid, stat, comm in others.values()]
        return len(others) - dead, dead, described

    # -- 6: 10 MB of output

    def big_output(self, sandbox: SandboxExecutor, host: HostExecutor) -> None:
        section = "6. a command printing 10 MB (cap 50 KB per stream)"

        def check(result: CommandResult) -> None:
            ok_result()(result)
            expect(result.cut >= BIG_OUTPUT - 2 * OUTPUT_CAP, f"the output was not capped: cut {result.cut}")
            expect(len(result.stdout) <= OUTPUT_CAP + 200, f"{len(result.stdout)} characters came back")

        growth: list[float] = []
        times = []
        before_all = status_kb("VmRSS")
        for round_ in range(self.warmup + self.reps):
            baseline = status_kb("VmRSS")
            peak_reset = reset_peak()
            started = time.perf_counter()
            result = sandbox.run(BIG_COMMAND, 30.0)
            elapsed = time.perf_counter() - started
            peak = status_kb("VmHWM" if peak_reset else "VmRSS")
            check(result)
            if round_ >= self.warmup:
                times.append(elapsed)
                growth.append((peak - baseline) / 1024)
        after_all = status_kb("VmRSS")
        host_times = timed(lambda: host.run(BIG_COMMAND, 30.0), check, self.reps, self.warmup)
        back = self.report.add(section, "sandbox: time until the capped result is back", "ms", ms(times))
        self.report.add(section, "host: the same (reference)", "ms", ms(host_times))
        grow_f = self.report.add(
            section,
            "nanocode peak RSS growth during the call",
            "MB",
            growth,
            "VmHWM after minus VmRSS before (peak reset through /proc/self/clear_refs)",
        )
        self.report.add(section, "nanocode RSS retained after all calls", "MB", [(after_all - before_all) / 1024])
        self.report.target("(6) 10 MB command, back", back.median, "<=", 200, "ms", "median")
        self.report.target("(6) 10 MB command, memory growth", max(grow_f.samples), "<", 50, "MB", "worst rep")

    # -- 7: the agent loop

    def agent_loop(self) -> None:
        steps, warm_steps, bare_count = self.args.steps, 20, self.warmup + self.reps
        section = f"7. agent loop, {steps} scripted steps (do-nothing tools, real HTTP)"
        # Consumed in this order: a warm-up goal, bare round trips, the measured goal, bare round trips.
        server = ScriptedServer(f"{warm_steps},F,{bare_count},{steps},F,{bare_count}")
        self.cleanup.push(server.stop)
        system = prompts.system_prompt(self.project, 120.0, OUTPUT_CAP, prompts.HOST)
        inner = OpenAIModel(server.url, "bench-key", "scripted", retries=0)
        http = requests.Session()

        def post(body: bytes) -> Callable[[], None]:
            def call() -> None:
                headers = {"Content-Type": "application/json"}
                response = http.post(server.url + "/chat/completions", data=body, headers=headers, timeout=30)
                expect(response.status_code == 200, f"the scripted server answered {response.status_code}")
                response.json()

            return call

        def request(messages: list[Message], schemas: list[dict[str, Any]]) -> str:
            return json.dumps({"model": inner.name, "messages": messages, "tools": schemas, "max_tokens": 8192})

        with tempfile.TemporaryDirectory(prefix="nanocode-bench-") as folder:
            transcript = Transcript(Path(folder, "transcript.jsonl"))

            def goal(model: Model) -> tuple[Agent, float]:
                # Every step is the same do-nothing call: the loop breaker must not stop it.
                limits = Limits(max_steps=steps + 10, max_continuations=0, max_seconds=3600, max_repeats=steps + 10)
                agent = Agent(model, system, limits, 120.0, QuietDisplay(), transcript)
                started = time.perf_counter()
                answer = agent.run("do nothing, many times", NullExecutor())
                elapsed = time.perf_counter() - started
                expect(answer == "done", f"the agent answered {answer!r}")
                return agent, elapsed

            try:
                first, _ = goal(inner)  # the warm-up goal
                opening = request(first.messages[:2], first.schemas).encode()
                bare = timed(post(opening), lambda _: None, self.reps, self.warmup)
                model = TimedModel(inner)
                agent, total = goal(model)
            finally:
                transcript.close()
        calls = len(model.starts)
        expect(calls == steps + 1, f"{calls} model calls for {steps} steps")
        last = request(agent.messages, agent.schemas)
        encode = timed(lambda: request(agent.messages, agent.schemas), lambda _: None, self.reps, self.warmup)
        decode = timed(lambda: json.loads(last), lambda _: None, self.reps, self.warmup)
        big = timed(post(last.encode()), lambda _: None, self.reps, self.warmup)
        handled = server.handling()
        expect(len(handled) == warm_steps + 1 + 2 * bare_count + calls, f"the server saw {len(handled)} requests")
        bare_server = handled[warm_steps + 1 + self.warmup : warm_steps + 1 + bare_count]
        main_server = handled[warm_steps + 1 + bare_count : warm_steps + 1 + bare_count + calls]
        big_server = handled[-self.reps :]

        step = [model.starts[i + 1] - model.starts[i] for i in range(calls - 1)]
        own = [model.starts[i + 1] - model.ends[i] for i in range(calls - 1)]
        call = [model.ends[i] - model.starts[i] for i in range(calls)]
        client = [c - s for c, s in zip(call, main_server, strict=True)]
        bare_client = statistics.median(b - s for b, s in zip(bare, bare_server, strict=True))
        # What nanocode adds to a step beyond the server's own time and a minimal HTTP exchange.
        overhead = [st - sv - bare_client for st, sv in zip(step, main_server, strict=False)]
        tenth = max(1, len(step) // 10)
        add = self.report.add
        add(section, "per step, whole run (wall / model calls)", "ms", [total / calls * 1000])
        add(section, "per step (one model call's start to the next)", "ms", ms(step))
        add(section, "  the model call (JSON, HTTP, the server)", "ms", ms(call))
        add(section, "    of which the server handling it", "ms", ms(main_server), "timed in the server process")
        add(section, "    of which nanocode's HTTP client and JSON", "ms", ms(client), "the model call less that")
        own_f = add(section, "  the agent's own work (between model calls)", "ms", ms(own))
        add(section, "bare HTTP round trip, first request", "ms", ms(bare), f"{len(opening) // 1024} KB, pre-encoded")
        add(section, "  of which the server", "ms", ms(bare_server))
        add(
            section,
            f"bare HTTP round trip, last request ({len(agent.messages)} messages)",
            "ms",
            ms(big),
            f"{len(last) // 1024} KB, pre-encoded",
        )
        add(section, "  of which the server", "ms", ms(big_server))
        add(section, "json.dumps of the last request (client side)", "ms", ms(encode))
        add(section, "json.loads of the last request (server side)", "ms", ms(decode), "in this process")
        add(section, "loop overhead per step", "ms", ms(overhead), "the step less the server, less a bare client")
        add(section, f"  the first {tenth} steps", "ms", ms(overhead[:tenth]))
        add(section, f"  the last {tenth} steps", "ms", ms(overhead[-tenth:]))
        mean_overhead = statistics.fmean(overhead) * 1000
        self.report.notes.append(
            f"agent loop: the real Agent, OpenAIModel and Transcript (to a temporary file), a do-nothing executor, "
            f"and tests/scripted_api.py's ScriptedAPI on 127.0.0.1 in a process of its own, timing its handling of "
            f"each request; {steps} tool-call replies, then a {MARKER} reply ({calls} model calls), after a "
            f"{warm_steps}-step warm-up goal. Each request re-sends the whole history, 2 messages longer every step, "
            f"so the model call grows with the step number. The agent's own work is the time from one model call's "
            f"return to the next one's start (parse the reply, run the tool, write the transcript, check the budget). "
            f"Loop overhead per step = the step less the server's handling of its request, less the client side of a "
            f"bare round trip (bare round trip less its server handling, median): what nanocode adds to a minimal "
            f"HTTP exchange, the JSON encoding of the growing history included."
        )
        self.report.target("(7) agent's own work per step", own_f.median, "<=", 1, "ms", "median of steps")
        self.report.target("(7) loop overhead per step", mean_overhead, "<=", 1, "ms", "mean over all steps")
        self.report.target(
            f"(7) loop overhead per step, last {tenth}",
            statistics.fmean(overhead[-tenth:]) * 1000,
            "<=",
            1,
            "ms",
            "mean",
        )

    # -- 8: start-up

    def startup(self) -> None:
        section = "8. start-up"
        script = Path(sys.executable).parent / "nanocode"
        command = [str(script)] if script.is_file() else [sys.executable, "-m", "nanocode"]
        env = {name: value for name, value in os.environ.items() if not name.startswith("NANOCODE_")}

        def launch(argv: list[str]) -> Callable[[], None]:
            def call() -> None:
                done = subprocess.run(argv, cwd=self.project, env=env, stdout=subprocess.DEVNULL, check=False)
                expect(done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}")

            return call

        samples = interleaved(
            {
                "help": launch([*command, "--help"]),
                "pass": launch([sys.executable, "-c", "pass"]),
                "click": launch([sys.executable, "-c", "import click"]),
            },
            self.reps,
            self.warmup,
        )
        ours = self.report.add(section, f"{' '.join(Path(c).name for c in command)} --help", "ms", ms(samples["help"]))
        base = self.report.add(section, "python3 -c pass (same interpreter)", "ms", ms(samples["pass"]))
        click = self.report.add(section, "  python3 -c 'import click'", "ms", ms(samples["click"]))
        self.report.notes.append(
            f"floor for (8): importing click alone takes {click.median / base.median:.2f}x python3 -c pass; "
            "click is the CLI's fixed dependency."
        )
        self.report.notes.append(
            f"start-up: both run by {sys.executable}; an interpreter whose site-packages run .pth hooks at every "
            "start is slower on `-c pass` and flatters the ratio: `make bench` (the project's venv) is the reference."
        )
        self.report.target("(8) nanocode --help / python3 -c pass", ours.median / base.median, "<=", 3, "x", "ratio")

    def run(self) -> None:
        only = set(self.args.only)
        if only & set("12356"):
            # One goal's sandbox serves 1, 2, 5 and 6, as it would serve a goal's tool calls.
            sandbox = self.sandbox()
            host = self.host()
            if only & set("12"):
                self.commands(sandbox, host)
            if "5" in only:
                self.timeout(sandbox)
            if "6" in only:
                self.big_output(sandbox, host)
            sandbox.close()
            if "3" in only:
                self.files()
        if "4" in only:
            self.lifecycle()
        if "7" in only:
            self.agent_loop()
        if "8" in only:
            self.startup()
        for name, module in SECTIONS.items():
            if name in only:
                importlib.import_module(module).section(self)


def _ancestors(table: dict[int, tuple[int, str, str]], pid: int) -> set[int]:
    found = set()
    while pid in table:
        pid = table[pid][0]
        found.add(pid)
    return found


def _descendants(table: dict[int, tuple[int, str, str]], root: int) -> set[int]:
    found, stack = set(), [root]
    while stack:
        parent = stack.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                stack.append(pid)
    return found


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/self/status")


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------- output


def number(value: float, unit: str) -> str:
    if unit == "":
        return f"{value:g}"
    if unit == "x":
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def render(report: Report, elapsed: float) -> str:
    m = report.machine
    s = report.settings
    out = [
        "nanocode benchmark",
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory']} RAM, kernel {m['kernel']}, Docker {m['docker']}",
        f"python:  {m['python']}; load average at the start {m['load']}",
        f"image:   {s.get('image', '?')}",
        f"runs:    median and p90 of {s['reps']} repetitions after {s['warmup']} warm-up, variants interleaved; "
        f"timeout test {s['timeout_reps']} repetitions after 1 warm-up; agent loop {s['steps']} steps"
        + ("  [--quick: a smoke run, not a measurement]" if s["quick"] else ""),
        "",
    ]
    width = max(len(f.label) for f in report.figures) + 2 if report.figures else 40
    header = f"  {'':{width}} {'median':>10} {'p90':>10} {'n':>5}"
    section = ""
    for figure in report.figures:
        if figure.section != section:
            section = figure.section
            out.extend([section, header] if not out[-1].startswith("  ") else ["", section, header])
        line = f"  {figure.label:{width}} {number(figure.median, figure.unit):>10} "
        line += f"{number(figure.p90, figure.unit):>10} {len(figure.samples):>5}"
        if figure.note:
            line += f"   {figure.note}"
        out.append(line)
    out.extend(["", "targets"])
    for t in report.targets:
        verdict = "PASS" if t.passed else "MISS"
        out.append(
            f"  {verdict}  {t.label:48} {number(t.value, t.unit):>10}  (target {t.op} {number(t.limit, t.unit)}; "
            f"{t.basis})"
        )
    if report.notes:
        out.extend(["", "notes"])
        out.extend(f"  - {note}" for note in report.notes)
    passed = sum(t.passed for t in report.targets)
    out.extend(["", f"{passed}/{len(report.targets)} targets met; the benchmark took {elapsed:.0f} s"])
    return "\n".join(out)


def write_json(path: str, report: Report, elapsed: float) -> None:
    data = {
        "machine": report.machine,
        "settings": report.settings,
        "figures": [f.as_json() for f in report.figures],
        "targets": [t.as_json() for t in report.targets],
        "notes": report.notes,
        "elapsed_seconds": elapsed,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------- main


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 30; 5 with --quick)")
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help=f"run only these parts, e.g. 17 or 5,{next(iter(SECTIONS), 'NAME')} (default: all)",
    )
    args = parser.parse_args(argv)
    args.only = set((args.only or ",".join(["12345678", *SECTIONS])).split(","))
    digits = {part for part in args.only if part not in SECTIONS}
    if not all(part.isdigit() and set(part) <= set("12345678") for part in digits):
        parser.error(f"--only takes digits 1 to 8 and the names {', '.join(SECTIONS)}, separated by commas")
    args.only = set("".join(digits)) | (args.only - digits)
    if args.reps is None:
        args.reps = 5 if args.quick else 30
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    args.warmup = 1 if args.quick else 3
    args.timeout_reps = 2 if args.quick else 5
    args.steps = 100 if args.quick else 1000
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    started = time.perf_counter()
    try:
        client = engine.connect(timeout=30)
    except NanocodeError as exc:
        print(f"bench: Docker is not reachable: {exc.format_message()}", file=sys.stderr)
        return 2
    report = Report(
        machine(client),
        {
            "reps": args.reps,
            "warmup": args.warmup,
            "timeout_reps": args.timeout_reps,
            "steps": args.steps,
            "quick": args.quick,
            "output_cap": OUTPUT_CAP,
        },
    )
    cleanup = Cleanup(client)
    code = 0
    since = time.time()
    with terminate_as_interrupt():
        try:
            Bench(client, args, report, cleanup).run()
        except KeyboardInterrupt:
            print("bench: interrupted; removing what it started", file=sys.stderr)
            code = 130
        except (NanocodeError, BenchError) as exc:
            message = exc.format_message() if isinstance(exc, NanocodeError) else str(exc)
            print(f"bench: {message}", file=sys.stderr)
            code = 1
        except DockerException as exc:
            print(f"bench: Docker failed: {engine.explain(exc)}", file=sys.stderr)
            code = 1
        finally:
            left = cleanup.run()
            if left:
                print(f"bench: removed containers left by an interrupted step: {', '.join(left)}", file=sys.stderr)
    if code:
        return code
    elapsed = time.perf_counter() - started
    report.in_order()
    others = others_on_engine(client, since)
    report.settings["other_containers_during_run"] = others
    report.notes.append(
        f"load average at the end: {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}; containers created by others "
        f"on this Docker engine during the run: {len(others)}"
        + (
            f" ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): figures may be disturbed"
            if others
            else ""
        )
    )
    print(render(report, elapsed))
    if args.json:
        write_json(args.json, report, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
