"""Section 10: `nanocode batch`, goals in parallel, with and without the warm pool.

24 goals of 5 model calls each (a write_file, three shell commands, the answer), the scripted model
answering each call after 0.5 s, run by `nanocode batch` as a process of its own with 1, 4 and 8
workers; and with 1 worker without the pool, where each goal waits for its workspace and sandbox.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import expect

DELAY = 0.5  # seconds before the model's every reply
STEPS = 5
SECTION = "10. batch"


def section(bench: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the scripted endpoint of the tests
    from tests.scripted_api import ScriptedAPI

    goals = 8 if bench.args.quick else 24
    api = ScriptedAPI().start()
    bench.cleanup.push(api.stop)
    api.goal_delay = DELAY
    runs = {}
    for pool, workers in ((True, 1), (True, 4), (True, 8), (False, 1)):
        runs[(pool, workers)] = _run(bench, api, goals, workers, pool)
    _report(bench, goals, runs)


def _script(api: Any, goals: int) -> Path:
    from nanocode.prompts import MARKER
    from tests.scripted_api import call, message, tools

    lines = []
    for n in range(goals):
        text = f"bench goal {n} {time.monotonic_ns()}"
        api.add_goal(text, tools(call("write_file", {"path": f"goal-{n}.txt", "content": text})))
        for _ in range(STEPS - 2):
            api.add_goal(text, tools(call("shell", {"command": "true"})))
        api.add_goal(text, message(f"{MARKER} done"))
        lines.append(json.dumps({"id": f"g{n:02d}", "goal": text}))
    path = Path(tempfile.mkdtemp(prefix="nanocode-bench-goals-")) / "goals.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def batch_run(bench: Any, api: Any, goals: int, how: list[str]) -> Iterator[tuple[float, Path]]:
    """`nanocode batch` of `goals` scripted goals, as a process of its own, with `how`: its wall time
    and its --out, which go (with its state folder) once the caller is done, whatever happened."""
    goals_file = _script(api, goals)
    root = goals_file.parent
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCODE_")}
        env |= {"OPENROUTER_API_KEY": "bench", "INFERENCE_BASE_URL": api.url, "XDG_STATE_HOME": str(root / "state")}
        command = [sys.executable, "-m", "nanocode", "batch", str(goals_file), "--out", str(root / "out")]
        command += ["--project", bench.project, "-q", *how]  # a user's defaults: 2g, 2 CPUs
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - started
        expect(done.returncode == 0, f"the batch ({' '.join(how)}) exited {done.returncode}: {done.stderr[-500:]}")
        yield wall, root / "out"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(bench: Any, api: Any, goals: int, workers: int, pool: bool) -> dict[str, Any]:
    how = ["--workers", str(workers), *([] if pool else ["--no-pool"])]
    with batch_run(bench, api, goals, how) as (wall, out):
        summary = json.loads((out / "summary.json").read_text())
    results = summary["results"]
    expect(all(r["outcome"] == "complete" and r["steps"] == STEPS for r in results), "a goal did not complete")
    expect(all(r["files_changed"] == [f"goal-{int(r['id'][1:])}.txt"] for r in results), "a wrong change set")
    return {"wall": wall, "batch": summary["seconds"], "results": results}


def _report(bench: Any, goals: int, runs: dict[tuple[bool, int], dict[str, Any]]) -> None:
    report = bench.report
    rates = {}
    for (pool, workers), run in runs.items():
        name = f"{workers} worker{'s' if workers > 1 else ''}{'' if pool else ', no pool'}"
        rates[(pool, workers)] = goals / run["wall"] * 60
        report.add(SECTION, f"goals per minute, {name}", "", [rates[(pool, workers)]], f"{run['wall']:.1f} s wall")
    own = {}
    for pool in (True, False):
        run = runs[(pool, 1)]
        model = sum(r["model_seconds"] for r in run["results"])
        own[pool] = (run["batch"] - model) / goals * 1000
        per_goal = [(r["seconds"] - r["model_seconds"]) * 1000 for r in run["results"]]
        label = f"a goal's time outside the model, removal included, 1 worker, {'with' if pool else 'without'} the pool"
        report.add(SECTION, label, "ms", per_goal, f"(batch - model) / goals = {own[pool]:.0f} ms")
    ready = {pool: [r["ready_seconds"] * 1000 for r in runs[(pool, 1)]["results"]] for pool in (True, False)}
    ready_pool = report.add(SECTION, "a goal's start to its sandbox ready, with the pool", "ms", ready[True])
    report.add(SECTION, "  the same without the pool", "ms", ready[False])
    ratio = rates[(True, 8)] / rates[(True, 1)]
    report.target("(10) goals per minute, 8 workers / 1 worker", ratio, ">=", 6, "x", "ratio of rates")
    report.target(
        "(10) nanocode's own cost per goal, with the pool", own[True], "<", 300, "ms", "(batch - model) / goals"
    )
    report.target("(10) a goal's start to its sandbox ready, with the pool", ready_pool.median, "<", 20, "ms", "median")
