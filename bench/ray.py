"""Section 13: `nanocode batch --ray`, goals across a Ray cluster of nodes on this machine.

24 goals of 5 model calls each, run by `nanocode batch --ray` on one node, then on two nodes, each
node hosting 4 sandboxes (`nanocode_sandbox: 4`) on this machine's engine; and by a local batch of
4 workers with the warm pool (as a Ray node's actor has it), the same work without Ray.

Two reply times. With the scripted model answering each call after 0.5 s (as in section 10),
Ray's own cost per goal is measured against the local batch. The two-node target is measured with
2 s a reply, nearer a real model's: at 0.5 s the two nodes, which share this machine's two cores
and its one engine, are bound by the cores and not by the model (the same work by a local batch of
8 workers against 4 gains no more), and that ratio and that ceiling are printed beside it. Joining
the cluster (`import ray`, `ray.init`, `ray.shutdown`) stays in every Ray wall; a row shows it.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batch import DELAY, STEPS, batch_run
from common import expect

SECTION = "13. batch on Ray"
SLOTS = 4  # sandboxes per node
# A reply time nearer a real model's, where the model's wait, not this machine's two cores, bounds a batch.
SLOW = 2.0


def section(bench: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    found = subprocess.run([sys.executable, "-c", "import ray.cluster_utils"], cwd="/", capture_output=True)
    if found.returncode != 0:
        bench.report.notes.append("13: Ray is not installed (pip install 'nanocode[ray]'): section skipped")
        return
    from tests.scripted_api import ScriptedAPI

    goals = 8 if bench.args.quick else 24
    api = ScriptedAPI().start()
    bench.cleanup.push(api.stop)
    api.goal_delay = DELAY
    local = {n: _run(bench, api, goals, ["--workers", str(n)]) for n in (SLOTS, 2 * SLOTS)}
    walls, slow, joins = {}, {}, []
    for nodes in (1, 2):
        with _cluster(nodes) as address:
            api.goal_delay = DELAY
            walls[nodes] = _run(bench, api, goals, ["--ray", address])
            joins.append(_join(address))
            api.goal_delay = SLOW
            slow[nodes] = _run(bench, api, goals, ["--ray", address])
    _report(bench, goals, local, walls, joins)
    basis = f"ratio of rates, {SLOW:g} s a reply: {slow[1]:.1f} / {slow[2]:.1f} s wall"
    bench.report.target("(13) goals per minute, 2 nodes / 1 node", slow[1] / slow[2], ">=", 1.8, "x", basis)


# In a process of its own: this module's name hides the `ray` package from the bench's own imports.
CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster()
for _ in range(int(sys.argv[1])):
    cluster.add_node(num_cpus=1, resources={"nanocode_sandbox": int(sys.argv[2])})
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@contextlib.contextmanager
def _cluster(nodes: int) -> Iterator[str]:
    """A Ray cluster of `nodes` nodes on this machine, each hosting SLOTS sandboxes; its address. The
    nodes keep their copies of the project in a state folder of their own, removed with the cluster."""
    state = tempfile.mkdtemp(prefix="nanocode-bench-ray-")
    process = subprocess.Popen(
        [sys.executable, "-c", CLUSTER, str(nodes), str(SLOTS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        env={**os.environ, "XDG_STATE_HOME": state},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        address = process.stdout.readline().strip()
        expect(bool(address), "the Ray cluster did not start")
        yield address
    finally:
        process.stdin.close()
        process.wait(timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _run(bench: Any, api: Any, goals: int, how: list[str]) -> float:
    with batch_run(bench, api, goals, how) as (wall, _):
        return wall


JOIN = """
import logging, sys, time
started = time.perf_counter()
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
ray.shutdown()
print(time.perf_counter() - started)
"""


def _join(address: str) -> float:
    """Seconds to import Ray, join the cluster and leave it, as `--ray` does (in its wall already)."""
    done = subprocess.run([sys.executable, "-c", JOIN, address], capture_output=True, text=True, cwd="/", timeout=120)
    expect(done.returncode == 0, f"joining the Ray cluster failed: {done.stderr[-300:]}")
    return float(done.stdout.split()[-1])


def _report(bench: Any, goals: int, local: dict[int, float], walls: dict[int, float], joins: list[float]) -> None:
    report = bench.report
    rates = {nodes: goals / wall * 60 for nodes, wall in walls.items()}
    for workers, wall in local.items():
        label = f"goals per minute, local batch, {workers} workers, with the pool"
        report.add(SECTION, label, "", [goals / wall * 60], f"{wall:.1f} s wall")
    for nodes, rate in rates.items():
        label = f"goals per minute, {nodes} node{'s' if nodes > 1 else ''} of {SLOTS} sandboxes"
        report.add(SECTION, label, "", [rate], f"{walls[nodes]:.1f} s wall")
    report.add(SECTION, "joining the cluster: import ray, ray.init, ray.shutdown", "ms", [j * 1000 for j in joins])
    floor = local[SLOTS] / local[2 * SLOTS]
    label = f"the most 2 nodes can gain here with {DELAY:g} s a reply: local batch, 8 workers / 4"
    report.add(SECTION, label, "x", [floor])
    own = (walls[1] - local[SLOTS]) / goals * 1000
    report.add(SECTION, "Ray's own cost per goal over the local batch, one node", "ms", [own])
    label = f"2 nodes / 1 node with {DELAY:g} s a reply: the two cores bound it (the row above)"
    report.add(SECTION, label, "x", [rates[2] / rates[1]], f"{walls[1]:.1f} / {walls[2]:.1f} s wall")
    report.target("(13) Ray's own cost per goal", own, "<", 100, "ms", "(Ray wall - local wall) / goals")
    expect(STEPS == 5, "the goals of section 10")
