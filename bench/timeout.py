"""Section 5: `sleep 1000` past its timeout: how soon the result is back, and what is left running."""

import time

from common import COUNT_COMMAND, SLEEP_TIMEOUT, expect, ms, ok_result
from harness import Bench

from nanocode.sandbox.executor import SandboxExecutor


def section(bench: Bench) -> None:
    timeout(bench, bench.goal_sandbox())


def timeout(bench: Bench, sandbox: SandboxExecutor) -> None:
    section = f"5. `sleep 1000` with a {SLEEP_TIMEOUT:g} s timeout, in the sandbox"
    reps, warmup = bench.args.timeout_reps, 1
    times, left, zombies, lines = [], [], [], []
    for round_ in range(warmup + reps):
        started = time.perf_counter()
        result = sandbox.run("sleep 1000", SLEEP_TIMEOUT)
        elapsed = time.perf_counter() - started
        expect(result.timed_out, f"sleep 1000 did not time out: {result!r:.300}")
        live, dead, described = leftovers(sandbox)
        if round_ >= warmup:
            times.append(elapsed)
            left.append(float(live))
            zombies.append(float(dead))
            lines.extend(described)
    back = bench.report.add(section, "time until the result is back", "ms", ms(times), f"{reps} reps (each ≥ 1 s)")
    live_f = bench.report.add(section, "processes left (live)", "", left, "counted right after each")
    dead_f = bench.report.add(section, "processes left (zombies)", "", zombies)
    if lines:
        bench.report.notes.append("left after a timeout: " + "; ".join(sorted(set(lines))))
    bench.report.notes.append(
        "processes left: the container's `ps -e` taken by a command right after the timed-out one, less "
        "PID 1 (docker-init) and the runtime (the chain from PID 1 to the counting shell), the counting shell "
        "itself and its child ps, and the runtime's shell server with the idle shells it keeps ready (from "
        "the runtime's `ping`); zombies are counted apart."
    )
    bench.report.target("(5) back within timeout + 200 ms", back.p90, "<=", SLEEP_TIMEOUT * 1000 + 200, "ms", "p90")
    bench.report.target(
        "(5) processes left after a timeout", max(live_f.samples) + max(dead_f.samples), "<=", 0, "", "worst rep"
    )


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
