"""Sections 1 and 2: one command through the executor, on the host and in the sandbox, against one
`docker exec` per command; and the floors no runtime can go below."""

import time
from collections.abc import Callable

from common import (
    PAUSE,
    BenchError,
    Figure,
    discard,
    expect,
    interleaved,
    ms,
    ok_result,
)
from harness import Bench

from nanocode.host import HostExecutor
from nanocode.sandbox.executor import SandboxExecutor


def section(bench: Bench) -> None:
    commands(bench, bench.goal_sandbox(), bench.goal_host())


def commands(bench: Bench, sandbox: SandboxExecutor, host: HostExecutor) -> None:
    section = "1-2. one command: executor.run(cmd, 30) against one docker exec per command"
    baseline = bench.exec_container()
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
        samples = interleaved(variants, bench.reps, bench.warmup, PAUSE)
    finally:
        discard(bench.client, baseline.id)
    figures = {name: bench.report.add(section, name, "ms", ms(values)) for name, values in samples.items()}
    for name, durations in inside.items():
        bench.report.add(
            section,
            f"  {name}, of which in the runtime",
            "ms",
            ms(durations[-bench.reps :]),
            "the reply's duration: spawn, command, collection",
        )
    bench.report.notes.append(
        "docker exec: container.exec_run(['bash', '-c', cmd], demux=True), i.e. exec_create + exec_start + "
        "exec_inspect, in a running container made by nanocode's own create() (same image, limits, hardening)."
    )
    bench.report.notes.append(
        f"1-2: every call comes after {PAUSE * 1000:.0f} ms of quiet, as a tool call comes after the model's "
        "reply; without it, the engine's clean-up after each `docker exec` (it goes on after exec_inspect "
        "returns) runs during the next variant's call and is counted there."
    )
    for command in ("true", "ls"):
        host_f, sandbox_f = figures[f"host: {command}"], figures[f"sandbox: {command}"]
        ratio = sandbox_f.median / host_f.median
        bench.report.target(f"(1) sandbox / host, {command}", ratio, "<=", 1.5, "x", "ratio of medians")
    for command in ("true", "ls"):
        sandbox_f, exec_f = figures[f"sandbox: {command}"], figures[f"docker exec: {command}"]
        ratio = exec_f.median / sandbox_f.median
        bench.report.target(f"(2) docker exec / sandbox, {command}", ratio, ">=", 30, "x", "ratio of medians")
    floors(bench, section, sandbox, figures["docker exec: ls"])


def floors(bench: Bench, section: str, sandbox: SandboxExecutor, exec_ls: Figure) -> None:
    """What no way of running a command in the sandbox can go below: the channel's round trip,
    and a shell's own fork and exec of `ls` in the same container."""

    runtime = sandbox.runtime
    if runtime is None:
        raise BenchError("the sandbox has no runtime")

    def ping() -> None:
        expect(runtime.request("ping", 10.0)["ok"], "the runtime did not answer a ping")

    trips = interleaved({"ping": ping}, bench.reps, bench.warmup, PAUSE)["ping"]
    trip = bench.report.add(section, "  sandbox: the channel's round trip (ping)", "ms", ms(trips))
    timing = "s=$EPOCHREALTIME; ls > /dev/null; echo $s $EPOCHREALTIME"
    per_ls = []
    for round_ in range(bench.warmup + bench.reps):
        time.sleep(PAUSE)
        result = sandbox.run(timing, 30.0)
        ok_result()(result)
        begin, end = (float(value) for value in result.stdout.split())
        if round_ >= bench.warmup:
            per_ls.append(end - begin)
    inside = bench.report.add(section, "  sandbox: ls alone, timed by its shell", "ms", ms(per_ls), "fork, exec, wait")
    bench.report.notes.append(
        f"floor for (2), ls: docker exec ls / (round trip + ls run inside) = {exec_ls.median:.1f} / "
        f"({trip.median:.2f} + {inside.median:.2f}) = {exec_ls.median / (trip.median + inside.median):.1f}x, "
        "for a runtime that costs nothing."
    )
