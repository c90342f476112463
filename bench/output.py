"""Section 6: a command printing 10 MB: the capped result back, and nanocode's memory meanwhile."""

import time
from pathlib import Path

from common import (
    BIG_COMMAND,
    BIG_OUTPUT,
    OUTPUT_CAP,
    BenchError,
    expect,
    ms,
    ok_result,
    timed,
)
from harness import Bench

from nanocode.host import HostExecutor
from nanocode.interfaces import CommandResult
from nanocode.sandbox.executor import SandboxExecutor


def section(bench: Bench) -> None:
    big_output(bench, bench.goal_sandbox(), bench.goal_host())


def big_output(bench: Bench, sandbox: SandboxExecutor, host: HostExecutor) -> None:
    section = "6. a command printing 10 MB (cap 50 KB per stream)"

    def check(result: CommandResult) -> None:
        ok_result()(result)
        expect(result.cut >= BIG_OUTPUT - 2 * OUTPUT_CAP, f"the output was not capped: cut {result.cut}")
        expect(len(result.stdout) <= OUTPUT_CAP + 200, f"{len(result.stdout)} characters came back")

    growth: list[float] = []
    times = []
    before_all = status_kb("VmRSS")
    for round_ in range(bench.warmup + bench.reps):
        baseline = status_kb("VmRSS")
        peak_reset = reset_peak()
        started = time.perf_counter()
        result = sandbox.run(BIG_COMMAND, 30.0)
        elapsed = time.perf_counter() - started
        peak = status_kb("VmHWM" if peak_reset else "VmRSS")
        check(result)
        if round_ >= bench.warmup:
            times.append(elapsed)
            growth.append((peak - baseline) / 1024)
    after_all = status_kb("VmRSS")
    host_times = timed(lambda: host.run(BIG_COMMAND, 30.0), check, bench.reps, bench.warmup)
    back = bench.report.add(section, "sandbox: time until the capped result is back", "ms", ms(times))
    bench.report.add(section, "host: the same (reference)", "ms", ms(host_times))
    grow_f = bench.report.add(
        section,
        "nanocode peak RSS growth during the call",
        "MB",
        growth,
        "VmHWM after minus VmRSS before (peak reset through /proc/self/clear_refs)",
    )
    bench.report.add(section, "nanocode RSS retained after all calls", "MB", [(after_all - before_all) / 1024])
    bench.report.target("(6) 10 MB command, back", back.median, "<=", 200, "ms", "median")
    bench.report.target("(6) 10 MB command, memory growth", max(grow_f.samples), "<", 50, "MB", "worst rep")


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
