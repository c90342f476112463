"""`nanocode batch --ray`: a real Ray cluster of two nodes on this machine, each node with its own
Docker engine (the second one only where NANOCODE_TEST_SECOND_ENGINE=1, as in CI), a scripted model."""

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import Reply, ScriptedAPI, call, error, message, tools
from tests.test_batch import SMALL, batch, goal_args, result, slow_goal, start, wait_for

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


class TwoNodes:
    def __init__(self, cluster: Any, worker: Any, engine: str):
        self.cluster = cluster
        self.worker = worker
        self.engine = engine  # the worker node's DOCKER_HOST ("" for the host's engine, as the head's)


def _node(cluster: Any, env: dict[str, str]) -> Any:
    """A node whose processes (and so its goals) have `env`: its engine, its state and cache folders."""
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return cluster.add_node(num_cpus=1, resources={"nanocode_sandbox": 2})
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def two_nodes(request: pytest.FixtureRequest, docker_engine: Any, sandbox_image: str) -> Iterator[TwoNodes]:
    second: dict[str, str] = {}
    # The second engine sees neither the host's /tmp nor its own: the node keeps its state beside it.
    home = tempfile.mkdtemp(prefix="nanocode-ray-node-", dir="/var/tmp")
    if os.environ.get("NANOCODE_TEST_SECOND_ENGINE"):
        second = {"DOCKER_HOST": request.getfixturevalue("second_engine").url}
        second |= {"XDG_STATE_HOME": f"{home}/state"}
    cluster = cluster_utils.Cluster()
    _node(cluster, {})
    worker = _node(cluster, second)
    cluster.wait_for_nodes()
    try:
        yield TwoNodes(cluster, worker, second.get("DOCKER_HOST", ""))
    finally:
        cluster.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def _goals(api: ScriptedAPI, count: int, prefix: str, steps: int = 2, delay: float = 0.3) -> list[dict[str, Any]]:
    for n in range(count):
        slow_goal(api, f"{prefix} {n}", steps=steps, delay=delay)
    return [{"id": f"{prefix[0]}{n}", "goal": f"{prefix} {n}"} for n in range(count)]


def _nodes_of(out: Path, entries: list[dict[str, Any]]) -> set[str]:
    return {result(out, e["id"])["engine"] for e in entries}


def test_goals_spread_over_both_nodes_and_come_back_with_their_change_sets(
    two_nodes: TwoNodes, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    entries = _goals(api, 6, "spread")
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", two_nodes.cluster.address, *SMALL))
    assert done.returncode == 0, done.stderr
    assert len(_nodes_of(out, entries)) == 2, done.stderr
    for e in entries:
        r = result(out, e["id"])
        assert r["outcome"] == "complete" and r["files_changed"] == [e["goal"].replace(" ", "-") + ".txt"]
        assert r["project"] == str(project)
        manifest = json.loads((out / e["id"] / "changes" / "manifest.json").read_text())
        assert manifest["project"] == str(project)
    assert "sk-test" not in "".join(p.read_text() for p in out.rglob("*.json"))
    assert not list(project.glob("spread-*"))  # nothing applied yet
    applied = batch(tmp_path, api, "apply", str(out))
    assert applied.returncode == 0, applied.stderr
    assert sorted(p.name for p in project.glob("spread-*")) == sorted(f"spread-{n}.txt" for n in range(6))


def test_a_node_killed_mid_batch_has_its_goals_run_elsewhere(
    two_nodes: TwoNodes, request: pytest.FixtureRequest, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    entries = _goals(api, 4, "killed", steps=8, delay=0.5)
    out = tmp_path / "out"
    process = start(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", two_nodes.cluster.address))
    try:
        wait_for(lambda: len({goal for _, goal in api.times}) == 4, 120)  # all four running, two on each node
        two_nodes.cluster.remove_node(two_nodes.worker)
        for e in entries:  # the goals of the dead node start again from their first reply
            slow_goal(api, e["goal"], steps=1, delay=0.1)
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    outcomes = [result(out, e["id"]) for e in entries]
    assert all(r["outcome"] == "complete" for r in outcomes), outcomes
    moved = [r for r in outcomes if "ended with its node" in r["reason"]]
    assert len(moved) == 2 and len({r["engine"] for r in outcomes}) == 1, outcomes
    if two_nodes.engine:  # the dead node's sandboxes end with their lease, on its own engine
        engine = request.getfixturevalue("second_engine").client
        wait_for(lambda: not [c for c in _ours_running(engine) if c.status == "running"], 30)


def _ours_running(client: Any) -> list[Any]:
    """The sandboxes of goals that ran on Ray nodes: their project is a node's copy."""
    return [
        c
        for c in client.containers.list(all=True, filters={"label": "nanocode"})
        if "ray-projects" in c.labels.get("nanocode.project", "")
    ]


def test_ctrl_c_cancels_every_goal_then_the_next_run_resumes(
    two_nodes: TwoNodes,
    docker_engine: Any,
    request: pytest.FixtureRequest,
    api: ScriptedAPI,
    project: Path,
    tmp_path: Path,
) -> None:
    entries = _goals(api, 3, "cancel", steps=40, delay=0.5)  # with the quick one, a goal per sandbox slot
    api.add_goal("cancel quick", message(f"{MARKER} quick"))
    entries.append({"id": "quick", "goal": "cancel quick"})
    out = tmp_path / "out"
    args = goal_args(tmp_path, entries, out, project, "--ray", two_nodes.cluster.address)
    process = start(tmp_path, api, *args)
    try:
        wait_for(lambda: (out / "quick" / "result.json").exists() and len({g for _, g in api.times}) == 4, 120)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True, stderr
    assert result(out, "quick")["outcome"] == "complete", stderr
    assert all(result(out, e["id"])["outcome"] == "interrupted" for e in entries[:3]), stderr
    engines = [docker_engine] + ([request.getfixturevalue("second_engine").client] if two_nodes.engine else [])
    wait_for(lambda: not any(_ours_running(e) for e in engines), 30)  # each node removed its sandboxes

    api.goals.clear()
    for e in entries[:3]:
        api.add_goal(e["goal"], message(f"{MARKER} second run"))
    again = batch(tmp_path, api, *args)
    assert again.returncode == 0, again.stderr
    assert "1 done already" in again.stderr
    assert all(result(out, e["id"])["answer"] == "second run" for e in entries[:3])


def test_a_429_on_one_node_holds_back_the_other(
    two_nodes: TwoNodes, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add_goal("storm 0", error(429, "slow down", {"Retry-After": "2"}), message(f"{MARKER} 0"))
    for n in range(1, 4):
        api.add_goal(
            f"storm {n}", Reply(tools(call("shell", {"command": "true"})).body, delay=1.0), message(f"{MARKER} {n}")
        )
    entries = [{"id": f"s{n}", "goal": f"storm {n}"} for n in range(4)]
    out = tmp_path / "out"
    done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", two_nodes.cluster.address, *SMALL))
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
        done = batch(tmp_path, api, *goal_args(tmp_path, entries, out, project, "--ray", cluster.address, *SMALL))
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
