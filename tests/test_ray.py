"""`nanocode batch --ray`: a real Ray cluster of two nodes on this machine, each node with its own
Docker engine (the second one only where NANOCODE_TEST_SECOND_ENGINE=1, as in CI), a scripted model."""

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, error, message, tools
from tests.test_batch import SMALL, batch, goal_args, result, running, slow_goal, wait_for

ray = pytest.importorskip("ray")
NOT_STARTED = "not started: interrupted: the batch was stopped"  # what a local batch says of a goal it never started
cluster_utils = pytest.importorskip("ray.cluster_utils")


@dataclass
class Nodes:
    """A cluster of two nodes: the head (the host's engine) and a worker (the second engine, where
    there is one), each with a state folder of its own; the head serves Ray Client at `client`."""

    cluster: Any
    worker: Any
    engine: str  # the worker node's DOCKER_HOST ("" for the host's engine, as the head's)
    engines: list[Any]  # each node's engine, the head's first
    states: list[Path]  # each node's state folder (its XDG_STATE_HOME), the head's first
    client: str = ""


def _node(cluster: Any, env: dict[str, str], **more: Any) -> Any:
    """A node whose processes (and so its goals) have `env`: its engine, its state and cache folders."""
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return cluster.add_node(num_cpus=1, resources={"nanocode_sandbox": 2}, **more)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def ray_cluster(request: pytest.FixtureRequest, client: bool = False) -> Iterator[Nodes]:
    """Two nodes, shut down and their folders removed however the test ends."""
    docker_engine = request.getfixturevalue("docker_engine")
    request.getfixturevalue("sandbox_image")
    # The second engine sees neither the host's /tmp nor its own: each node keeps its state in /var/tmp.
    home = Path(tempfile.mkdtemp(prefix="nanocode-ray-node-", dir="/var/tmp"))
    states = [home / "head", home / "worker"]
    second, engines = {"XDG_STATE_HOME": str(states[1])}, [docker_engine, docker_engine]
    if os.environ.get("NANOCODE_TEST_SECOND_ENGINE"):
        engine = request.getfixturevalue("second_engine")
        second["DOCKER_HOST"], engines[1] = engine.url, engine.client
    port = _free_port() if client else None
    cluster = cluster_utils.Cluster()
    try:
        # A Ray Client connection whose server dies as it starts (Ray's own race, tried again by nanocode)
        # holds the client until the head gives up on that server: 30 s by default, less here.
        head = {"XDG_STATE_HOME": str(states[0]), "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "15"}
        _node(cluster, head, **({"ray_client_server_port": port} if port else {}))
        worker = _node(cluster, second)
        cluster.wait_for_nodes()
        yield Nodes(cluster, worker, second.get("DOCKER_HOST", ""), engines, states, f"ray://127.0.0.1:{port}")
    finally:
        cluster.shutdown()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def nodes(request: pytest.FixtureRequest) -> Iterator[Nodes]:
    """The module's cluster, for the tests that leave its nodes as they found them."""
    with ray_cluster(request, client=True) as cluster:
        yield cluster


@pytest.fixture
def two_nodes(request: pytest.FixtureRequest) -> Iterator[Nodes]:
    """A cluster of the test's own, for a test that kills one of its nodes."""
    with ray_cluster(request) as cluster:
        yield cluster


def _goals(api: ScriptedAPI, count: int, prefix: str, steps: int = 2, delay: float = 0.3) -> list[dict[str, Any]]:
    for n in range(count):
        slow_goal(api, f"{prefix} {n}", steps=steps, delay=delay)
    return [{"id": f"{prefix[0]}{n}", "goal": f"{prefix} {n}"} for n in range(count)]


def _nodes_of(out: Path, entries: list[dict[str, Any]]) -> set[str]:
    return {result(out, e["id"])["engine"] for e in entries}


def _ours(client: Any, nodes: Nodes) -> list[str]:
    """What goals that ran on these nodes have on an engine (their project is a node's copy): containers,
    volumes, networks."""
    labelled = [
        *((c.name, c.labels) for c in client.containers.list(all=True, filters={"label": "nanocode"})),
        *((v["Name"], v.get("Labels")) for v in client.api.volumes(filters={"label": "nanocode"})["Volumes"] or []),
        *((n["Name"], n.get("Labels")) for n in client.api.networks(filters={"label": "nanocode"})),
    ]
    home = str(nodes.states[0].parent)
    return [name for name, labels in labelled if (labels or {}).get("nanocode.project", "").startswith(home)]


def _nothing_left(nodes: Nodes) -> None:
    """No goal of the batch left anything on any node: no change set, goal folder or layer in its state
    folder, no container, volume or network on its engine."""
    for state in nodes.states:
        for kept in ("changes", "ray-goals", "layers"):
            folder = state / "nanocode" / kept
            assert not (folder.is_dir() and list(folder.iterdir())), list(folder.iterdir())
    for engine in nodes.engines:
        assert not _ours(engine, nodes)


def _watch(nodes: Nodes, process: subprocess.Popen[str]) -> list[dict[str, str]]:
    """Each node's sandboxes, seen while the batch runs: everything their engine says of them."""
    seen: list[dict[str, str]] = [{} for _ in nodes.engines]
    while process.poll() is None:
        for engine, found in zip(nodes.engines, seen, strict=True):
            with contextlib.suppress(Exception):  # a container removed between the list and its inspection
                for c in engine.containers.list(filters={"label": "nanocode"}):
                    if c.labels.get("nanocode.project", "").startswith(str(nodes.states[0].parent)):
                        found[c.id] = json.dumps(engine.api.inspect_container(c.id))
        time.sleep(0.1)
    return seen


def _what_ray_holds(nodes: Nodes) -> str:
    """Whatever the cluster's GCS holds of tasks, actors and jobs (what the dashboard and
    ray.util.state show, read straight from the GCS: `ray[client]` has no dashboard), and its logs."""
    import ray._private.state as gcs

    ray.init(nodes.cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        held = [str(gcs.state._get_all_task_events()), str(gcs.actors()), str(gcs.jobs())]
    finally:
        ray.shutdown()
    for node in (nodes.cluster.head_node, nodes.worker):
        logs = Path(node.get_session_dir_path()) / "logs"
        held += [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()]
    return "\n".join(held)


def test_through_ray_client_goals_spread_come_back_whole_and_leave_nothing_nor_the_key_anywhere(
    nodes: Nodes, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    spread = _goals(api, 6, "spread", steps=3)
    env = call("shell", {"command": "env; tr '\\0' '\\n' </proc/1/environ"})
    api.add_goal("spread env", tools(env), message(f"{MARKER} env"))
    entries = [*spread, {"id": "env", "goal": "spread env"}]
    out = tmp_path / "out"
    with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", nodes.client, *SMALL)) as batch_:
        sandboxes = _watch(nodes, batch_)
        _, stderr = batch_.communicate(timeout=60)
    assert batch_.returncode == 0, stderr
    assert len(_nodes_of(out, entries)) == 2, stderr
    assert result(out, "env")["outcome"] == "complete"
    for e in spread:
        r = result(out, e["id"])
        assert r["outcome"] == "complete" and r["files_changed"] == [e["goal"].replace(" ", "-") + ".txt"]
        assert r["project"] == str(project)
        manifest = json.loads((out / e["id"] / "changes" / "manifest.json").read_text())
        assert manifest["project"] == str(project)
        assert (tmp_path / "state" / "nanocode" / "changes" / r["change_set"] / "manifest.json").is_file()
    _nothing_left(nodes)

    assert all(sandboxes) if nodes.engine else sum(map(len, sandboxes)) >= 2, sandboxes
    goals = {json.loads(s)["Config"]["Labels"]["nanocode.goal"] for found in sandboxes for s in found.values()}
    assert not [g for g in goals if glob.glob(os.path.join(tempfile.gettempdir(), f"nanocode-{g}-*"))]  # sockets'
    sent_back = [p.read_text() for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert "HOME=" in (out / "env" / "transcript.jsonl").read_text()  # the sandbox's environment, as it saw it
    for where in (*sent_back, *(s for found in sandboxes for s in found.values()), _what_ray_holds(nodes)):
        assert "sk-test" not in where
    assert {h.get("Authorization") for h in api.headers} == {"Bearer sk-test"}  # it reached every node all the same

    assert not list(project.glob("spread-*"))  # nothing applied yet
    applied = batch(tmp_path, api, "apply", str(out))
    assert applied.returncode == 0, applied.stderr
    assert sorted(p.name for p in project.glob("spread-*")) == sorted(f"spread-{n}.txt" for n in range(6))


def _copies(nodes: Nodes) -> list[dict[str, int]]:
    """Each node's copies of projects: content hash to the copy's inode (a new copy, a new inode)."""
    roots = [state / "nanocode" / "ray-projects" for state in nodes.states]
    return [{p.name: p.stat().st_ino for p in r.iterdir() if p.is_dir() and len(p.name) == 64} for r in roots]


def test_a_project_travels_once_and_each_node_unpacks_it_once_per_content_hash(
    nodes: Nodes, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    def run(name: str) -> list[dict[str, int]]:
        """A batch of quick goals in the project; the copies on each node after it."""
        entries = [{"id": f"{name}{n}", "goal": f"{name} {n}"} for n in range(4)]
        for e in entries:
            api.add_goal(e["goal"], message(f"{MARKER} done"))
        out = tmp_path / name
        done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", nodes.cluster.address, *SMALL))
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("packed once") == 1, done.stderr  # one pack, one put into the object store
        return _copies(nodes)

    (project / "main.py").write_text(f"{tmp_path}\n")  # content of its own: another test's copy is not this one
    before = _copies(nodes)
    first = run("first")
    made = [{d: i for d, i in after.items() if d not in old} for after, old in zip(first, before, strict=True)]
    assert len({d for m in made for d in m}) == 1, made  # one copy per node that ran a goal, of one hash
    assert run("second") == first  # the next batch of the same project unpacks nothing
    (project / "main.py").write_text("changed\n")
    third = run("third")
    for after, earlier in zip(third, first, strict=True):
        assert {d: after[d] for d in earlier if d in after} == earlier  # the earlier copies untouched
    assert len({d for after, earlier in zip(third, first, strict=True) for d in after if d not in earlier}) == 1


def test_a_node_killed_mid_batch_has_its_goals_run_elsewhere(
    two_nodes: Nodes, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    entries = _goals(api, 4, "killed", steps=8, delay=0.5)
    out = tmp_path / "out"
    with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", two_nodes.cluster.address)) as b:
        wait_for(lambda: len({goal for _, goal in api.times}) == 4, 120)  # all four running, two on each node
        two_nodes.cluster.remove_node(two_nodes.worker)
        for e in entries:  # the goals of the dead node start again from their first reply
            slow_goal(api, e["goal"], steps=1, delay=0.1)
        _, stderr = b.communicate(timeout=240)
    assert b.returncode == 0, stderr
    outcomes = [result(out, e["id"]) for e in entries]
    assert all(r["outcome"] == "complete" for r in outcomes), outcomes
    moved = [r for r in outcomes if "ended with its node" in r["reason"]]
    assert len(moved) == 2 and len({r["engine"] for r in outcomes}) == 1, outcomes
    _after_dead_nodes(two_nodes, two_nodes.engines[1:])  # the dead node's engine (the host's, without a second)


@pytest.mark.parametrize("through", ["address", "client"])
def test_a_cluster_gone_mid_batch_ends_the_batch_with_every_goal_accounted_for(
    request: pytest.FixtureRequest, api: ScriptedAPI, project: Path, tmp_path: Path, through: str
) -> None:
    entries = _goals(api, 6, "orphaned", steps=40, delay=0.5)  # four running, two waiting in the nodes' pools
    out = tmp_path / "out"
    with ray_cluster(request, client=through == "client") as nodes:
        address = nodes.client if through == "client" else nodes.cluster.address
        with running(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", address)) as b:
            wait_for(lambda: len({goal for _, goal in api.times}) == 4, 120)
            nodes.cluster.shutdown()  # its GCS and both nodes, with the actors and the goals on them
            gone = time.monotonic()
            _, stderr = b.communicate(timeout=90)
    # Over an address, Ray ends the driver with its node; over Ray Client, the GCS's silence says it.
    assert time.monotonic() - gone < 55 and "Failed to connect to GCS" not in stderr, stderr
    assert b.returncode == 3 and "Traceback" not in stderr, stderr
    assert "batch: the Ray cluster went away" in stderr, stderr
    assert all(re.match(r"(batch:|nanocode:|\[o\d\] )", line) for line in stderr.splitlines()), stderr  # no Ray's
    assert (out / "ray.log").is_file()  # where Ray's own lines went
    summary = json.loads((out / "summary.json").read_text())
    outcomes = {r["id"]: (r["outcome"], r["reason"]) for r in summary["results"]}
    assert len(outcomes) == 6 and {o for o, _ in outcomes.values()} == {"engine"}, outcomes
    assert all("the Ray cluster went away" in reason for _, reason in outcomes.values()), outcomes
    _after_dead_nodes(nodes, nodes.engines)


def _after_dead_nodes(nodes: Nodes, engines: list[Any]) -> None:
    """On the engines of nodes that died: none of their goals' sandboxes runs once its lease ended.
    What they left goes at the next nanocode start there (as here, and not before: the engine is
    shared by the tests that follow), but what is younger than START_GRACE and may be a goal's that is
    still starting: the test says which goals ended, for those."""
    from nanocode import cleanup
    from nanocode.sandbox import container

    for engine in engines:
        wait_for(lambda engine=engine: all(c.status != "running" for c in _sandboxes(engine, nodes)), 30)
        for made in _sandboxes(engine, nodes):
            if made.status == "created":  # never started: it has no lease to end
                made.remove(force=True)
        cleanup.remove_leftovers(engine, lambda line: None, container.Prune(gone=_goals_of(engine, nodes)))
        assert not _ours(engine, nodes)


def _goals_of(client: Any, nodes: Nodes) -> set[str]:
    """The goals whose sandboxes or volumes are on the engine, of the goals that ran on these nodes."""
    home = str(nodes.states[0].parent)
    volumes = client.api.volumes(filters={"label": "nanocode"})["Volumes"] or []
    labelled = [c.labels for c in _sandboxes(client, nodes)] + [v.get("Labels") or {} for v in volumes]
    return {lab.get("nanocode.goal", "") for lab in labelled if lab.get("nanocode.project", "").startswith(home)}


def _sandboxes(client: Any, nodes: Nodes) -> list[Any]:
    """The sandboxes of the goals that ran on these nodes: their project is a node's copy."""
    home = str(nodes.states[0].parent)
    listed = client.containers.list(all=True, filters={"label": "nanocode"})
    return [c for c in listed if c.labels.get("nanocode.project", "").startswith(home)]


@pytest.mark.parametrize(("through", "sig"), [("address", signal.SIGINT), ("client", signal.SIGTERM)])
def test_ctrl_c_cancels_every_goal_says_which_never_started_and_the_next_run_runs_those(
    nodes: Nodes, api: ScriptedAPI, project: Path, tmp_path: Path, through: str, sig: int
) -> None:
    # Four sandbox slots: the quick goal and three slow ones take them, then one waiting goal takes the
    # quick one's; the last still waits for a node when the batch is stopped.
    api.add_goal("cancel quick", message(f"{MARKER} quick"))
    entries = [{"id": "quick", "goal": "cancel quick"}, *_goals(api, 5, "cancel", steps=40, delay=0.5)]
    out = tmp_path / "out"
    address = nodes.client if through == "client" else nodes.cluster.address
    args = goal_args(tmp_path, entries, out, project, "--ray", address)
    with running(tmp_path, api, *args) as b:
        wait_for(lambda: (out / "quick" / "result.json").exists() and len({g for _, g in api.times}) == 5, 120)
        b.send_signal(sig)
        _, stderr = b.communicate(timeout=60)
    assert b.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["goals"] == 6, stderr
    outcomes = {r["id"]: (r["outcome"], r["reason"]) for r in summary["results"]}
    ran = {goal for _, goal in api.times}
    waiting = [e["id"] for e in entries if e["goal"] not in ran]
    assert outcomes.pop("quick") == ("complete", "")
    assert len(waiting) == 1 and outcomes.pop(waiting[0]) == ("stopped", NOT_STARTED), summary
    assert f"[{waiting[0]}]" not in stderr, stderr  # queued all along, as a local batch shows it
    assert set(outcomes.values()) == {("interrupted", "interrupted: the batch was stopped")}, summary
    assert all((out / i / "transcript.jsonl").is_file() for i in outcomes)  # what each did came back
    wait_for(lambda: not any(_ours(e, nodes) for e in nodes.engines), 30)  # each node removed its sandboxes

    api.goals.clear()
    for e in entries[1:]:
        api.add_goal(e["goal"], message(f"{MARKER} second run"))
    api.times.clear()
    again = batch(tmp_path, api, *args)
    assert again.returncode == 0, again.stderr
    assert "1 done already" in again.stderr
    assert sorted(goal for _, goal in api.times) == sorted(e["goal"] for e in entries[1:])
    assert all(result(out, e["id"])["answer"] == "second run" for e in entries[1:])
    _nothing_left(nodes)


def test_a_429_on_one_node_holds_back_the_other(nodes: Nodes, api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add_goal("storm 0", error(429, "slow down", {"Retry-After": "2"}), message(f"{MARKER} 0"))
    for n in range(1, 4):
        api.add_goal(
            f"storm {n}", Reply(tools(call("shell", {"command": "true"})).body, delay=1.0), message(f"{MARKER} {n}")
        )
    entries = [{"id": f"s{n}", "goal": f"storm {n}"} for n in range(4)]
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", nodes.cluster.address, *SMALL))
    assert done.returncode == 0, done.stderr
    assert len(_nodes_of(out, entries)) == 2
    refused = next(t for t, goal in api.times if goal == "storm 0")
    held = [t for t, goal in api.times if goal != "storm 0" and refused + 0.5 < t < refused + 1.9]
    # No request went out on either node while the back-off held (once the actor had it: half a second).
    assert not held, (refused, api.times)
    far = result(out, "s0")["engine"]
    assert any(r["engine"] != far for r in map(lambda e: result(out, e["id"]), entries))
    assert json.loads((out / "summary.json").read_text())["backoffs"] >= 1


def test_a_node_that_cannot_reach_the_model_says_so(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    cluster = cluster_utils.Cluster()
    _node(cluster, {})
    # Everything this node sends goes through a proxy that nothing answers.
    dead = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    _node(cluster, dead)
    try:
        entries = _goals(api, 4, "reach", steps=2, delay=0.5)
        out = tmp_path / "out"
        args = goal_args(tmp_path, entries, out, project, "--ray", cluster.address, "--retries", "1", *SMALL)
        done = batch(tmp_path, api, *args)  # one retry: the back-off it holds holds both nodes
    finally:
        cluster.shutdown()
    outcomes = [result(out, e["id"]) for e in entries]
    failed = [r for r in outcomes if r["outcome"] == "endpoint"]
    assert failed and len({r["engine"] for r in failed}) == 1, outcomes
    assert all(r["outcome"] == "complete" for r in outcomes if r["engine"] != failed[0]["engine"]), outcomes
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_a_cluster_without_sandbox_nodes_is_one_line(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        done = batch(tmp_path, api, "--goal", "x", "--project", str(project), "--ray", cluster.address)
    finally:
        cluster.shutdown()
    assert done.returncode != 0
    assert "no node of the cluster hosts sandboxes" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_where_nothing_answers_is_one_line_at_once(
    api: ScriptedAPI, project: Path, tmp_path: Path, scheme: str
) -> None:
    address = f"{scheme}127.0.0.1:{_free_port()}"  # where Ray would retry for minutes, printing as it goes
    started = time.monotonic()
    done = batch(tmp_path, api, "--goal", "x", "--project", str(project), "--ray", address)
    assert time.monotonic() - started < 30 and done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"nanocode: --ray {address}: the Ray cluster cannot be reached (nothing answers at "
        f"{address.removeprefix('ray://')}: Connection refused)"
    ], done.stderr
