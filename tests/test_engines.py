"""Engines as they really are: contexts, rootless Podman, limits an engine cannot enforce, start
failures in the engine's own words, removal races, OCI runtimes (gVisor) and the isolation line."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from nanocode import prompts
from nanocode.errors import ConfigError
from nanocode.host import PipeTransport, command_environment
from nanocode.runtime.client import BOOTSTRAP, SERVER_SOURCE, RuntimeClient
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox import engine, image
from nanocode.sandbox.container import SandboxConfig
from nanocode.sandbox.executor import SandboxExecutor
from nanocode.sandbox.isolation import Isolation
from nanocode.sandbox.protect import project_mounts
from tests.docker_support import gvisor_runtime
from tests.scripted_api import ScriptedAPI, call, message, tools

# Podman 4.3.1 rootless on cgroup v1 (Debian 12), as its Docker-compatible /info and its /libpod/info
# answered: /info claims every limit and lists no "rootless"; /libpod/info tells the truth.
PODMAN_ROOTLESS_INFO = {
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "SecurityOptions": ["name=seccomp,profile=default"],
    "Warnings": [],
    "MemoryLimit": True,
    "CpuCfsQuota": True,
    "PidsLimit": True,
}
PODMAN_ROOTLESS_LIBPOD = {
    "host": {
        "security": {"rootless": True, "seccompEnabled": True, "apparmorEnabled": False},
        "cgroupVersion": "v1",
        "cgroupManager": "cgroupfs",
        "cgroupControllers": [],
    }
}


def _nanocode(*args: str) -> list[str]:
    return [sys.executable, "-m", "nanocode", *args]


def _env(tmp_path: Path, api: ScriptedAPI | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test"}
    if api is not None:
        env["INFERENCE_BASE_URL"] = api.url
    return env | extra


# -- contexts and endpoints


def test_an_unknown_docker_context_is_one_line_and_exit_3(project: Path, tmp_path: Path) -> None:
    env = _env(tmp_path, DOCKER_CONTEXT="nosuch", DOCKER_CONFIG=str(tmp_path / "docker-config"))
    env.pop("DOCKER_HOST", None)
    done = subprocess.run(
        _nanocode("--sandbox", "-p", "g", "--project", str(project)), env=env, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "'nosuch' does not exist" in done.stderr


def test_a_context_whose_engine_is_down_is_named_by_its_endpoint(project: Path, tmp_path: Path) -> None:
    from docker.context import ContextAPI

    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text("{}")  # without it, docker-py looks for contexts in the working directory
    dead = f"unix://{tmp_path}/nothing-listens.sock"
    os.environ["DOCKER_CONFIG"] = str(config)
    try:
        ContextAPI.create_context("down", host=dead)
    finally:
        del os.environ["DOCKER_CONFIG"]
    env = _env(tmp_path, DOCKER_CONTEXT="down", DOCKER_CONFIG=str(config))
    env.pop("DOCKER_HOST", None)
    done = subprocess.run(
        _nanocode("--sandbox", "-p", "g", "--project", str(project)), env=env, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    assert dead in done.stderr and "context down" in done.stderr
    assert "default socket" not in done.stderr and "Traceback" not in done.stderr


# -- what the engine says of itself


def test_rootless_podman_is_known_by_its_libpod_info() -> None:
    assert engine.is_rootless(PODMAN_ROOTLESS_INFO, PODMAN_ROOTLESS_LIBPOD)
    assert not engine.is_rootless(PODMAN_ROOTLESS_INFO, {})
    rootless_docker = {"SecurityOptions": ["name=seccomp,profile=default", "name=rootless"]}
    assert engine.is_rootless(rootless_docker, {})


def test_the_engine_under_test_describes_itself(docker_engine: Any) -> None:
    facts = engine.facts(docker_engine)
    podman = bool(engine.libpod_info(docker_engine))
    assert facts.product.startswith("Podman" if podman else "Docker")
    assert not facts.rootless  # CI's engines run as root
    assert facts.default_runtime in facts.runtimes
    assert facts.unenforced == []


def test_limits_a_rootless_engine_on_cgroup_v1_cannot_enforce_are_not_claimed() -> None:
    assert engine.unenforced_limits(PODMAN_ROOTLESS_INFO, PODMAN_ROOTLESS_LIBPOD, True) == list(engine.LIMITS)
    rootful = {**PODMAN_ROOTLESS_INFO}
    assert engine.unenforced_limits(rootful, {}, False) == []
    no_memory = {**rootful, "Warnings": ["WARNING: No memory limit support"], "MemoryLimit": False}
    assert engine.unenforced_limits(no_memory, {}, False) == ["memory"]
    v2_delegated = {"host": {"cgroupControllers": ["cpu", "pids"], "security": {"rootless": True}}}
    assert engine.unenforced_limits({**rootful, "CgroupVersion": "2"}, v2_delegated, True) == ["memory"]
    told = prompts.limits("2g", 2.0, 512, ["memory", "CPU", "processes"])
    assert "2g" not in told and "512" not in told and "does not enforce the memory, CPU, processes limits" in told
    assert prompts.limits("2g", 2.0, 512, []) == "Limits: memory 2g, 2 CPUs, at most 512 processes."


def test_build_progress_is_shown_from_docker_and_from_podman() -> None:
    assert image.progress_line("Step 1/5 : FROM x") == "Step 1/5 : FROM x"
    assert image.progress_line("STEP 1/5: FROM x") == "STEP 1/5: FROM x"
    assert image.progress_line(" ---> Running in 0123") is None


# -- sandboxes on the engine under test


@pytest.mark.usefixtures("no_leftovers")
def test_a_start_refused_by_the_engine_says_why_and_is_not_retried_without_the_folder(
    docker_engine: Any, sandbox_image: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = []
    real_create = lifecycle.create

    def counted(client: Any, config: SandboxConfig, goal: str, folder: str | None = None) -> Any:
        made.append(folder)
        return real_create(client, config, goal, folder)

    monkeypatch.setattr(lifecycle, "create", counted)
    config = SandboxConfig(
        project=str(project), image=sandbox_image, user="nosuchuser", mounts=project_mounts(str(project))
    )
    with pytest.raises(ConfigError) as refused:
        SandboxExecutor(docker_engine, config, 20000)
    message = refused.value.format_message()
    assert "nosuchuser" in message, message
    assert "the image needs python3" not in message
    assert len(made) == 1 and made[0] is not None


@pytest.mark.usefixtures("no_leftovers")
def test_a_container_that_exits_as_it_is_removed_is_still_removed(
    docker_engine: Any, sandbox_image: str, project: Path
) -> None:
    # Closing the runtime's channel ends the container as its removal starts: Podman 4.3 answers
    # 500 "container state improper: stopped" to about half of those removals.
    notes: list[str] = []
    made = []
    for _ in range(8):
        config = SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project)))
        executor = SandboxExecutor(docker_engine, config, 20000, notes.append)
        made.append(executor.container_id)
        assert executor.run("true", 10).exit_code == 0
        executor.close()
    assert not [n for n in notes if "not removed" in n], notes
    assert not [c for c in lifecycle.ours(docker_engine) if c.id in made]


@pytest.mark.usefixtures("no_leftovers")
def test_a_failed_removal_is_said_in_one_line(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    notes: list[str] = []
    executor = SandboxExecutor(
        docker_engine,
        SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project))),
        20000,
        notes.append,
    )
    target = executor.container_id
    assert target is not None
    executor.docker = docker.DockerClient(
        base_url=f"unix://{project}/no-engine.sock", version="1.41"
    )  # the engine went away
    try:
        executor.close()
    finally:
        lifecycle.remove(docker_engine, target)
    said = [n for n in notes if "not removed" in n]
    assert len(said) == 1 and "\n" not in said[0] and "nanocode sandbox prune" in said[0]


@pytest.mark.usefixtures("no_leftovers")
def test_an_unknown_runtime_is_one_line_listing_the_engines_runtimes(
    docker_engine: Any, sandbox_image: str, project: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        _nanocode("--sandbox", "--image", sandbox_image, "--runtime", "nosuch", "-p", "g", "--project", str(project)),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    runtimes = engine.facts(docker_engine).runtimes
    assert done.stderr.count("\n") == 1 and "no OCI runtime 'nosuch'" in done.stderr
    assert all(name in done.stderr for name in runtimes)


@pytest.mark.usefixtures("no_leftovers")
def test_the_isolation_is_said_and_recorded_at_the_start_of_a_goal(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add(tools(call("shell", {"command": "true"})), message(f"{prompts.MARKER} ok"))
    transcript = tmp_path / "t.jsonl"
    done = subprocess.run(
        _nanocode("--sandbox", "-p", "g", "--project", str(project), "--transcript", str(transcript)),
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("isolation: ")]
    assert len(lines) == 1
    facts = engine.facts(docker_engine)
    assert f"runtime {facts.default_runtime}" in lines[0] and "rootful" in lines[0] and "network none" in lines[0]
    assert "seccomp" in lines[0] and "memory 2g, 2 CPUs, 512 processes" in lines[0]
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    isolation = [r for r in records if r["kind"] == "isolation"]
    assert len(isolation) == 1
    assert isolation[0]["runtime"] == facts.default_runtime and isolation[0]["unenforced"] == []
    assert isolation[0]["network"] == "none" and isinstance(isolation[0]["fallbacks"], list)


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("required", ["gvisor", "rootless"])
def test_an_isolation_below_the_one_required_refuses_the_goal(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path, required: str
) -> None:
    done = subprocess.run(
        _nanocode("--sandbox", "--require-isolation", required, "-p", "g", "--project", str(project)),
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert f"isolation required: {required}" in done.stderr
    assert api.requests == []  # refused before the model was asked anything


@pytest.mark.usefixtures("no_leftovers")
def test_require_limits_refuses_an_engine_that_would_not_enforce_them(
    docker_engine: Any, sandbox_image: str, project: Path
) -> None:
    # The engine under test enforces its limits; the facts are those a rootless cgroup v1 engine reports.
    facts = engine.facts(docker_engine)
    facts.unenforced = engine.unenforced_limits(PODMAN_ROOTLESS_INFO, PODMAN_ROOTLESS_LIBPOD, True)
    config = SandboxConfig(project=str(project), image=sandbox_image, mounts=project_mounts(str(project)))
    with pytest.raises(ConfigError, match="does not enforce memory, CPU, processes"):
        SandboxExecutor(docker_engine, config, 20000, facts=facts, required=["limits"])
    seen: list[Isolation] = []
    executor = SandboxExecutor(docker_engine, config, 20000, facts=facts, report=seen.append)
    try:
        assert "NOT enforced: memory, CPU, processes" in seen[0].line()
    finally:
        executor.close()


# -- the runtime where the kernel lacks a subreaper and pidfds (as under gVisor)


def _runtime_without_subreaper_or_pidfds(project: Path) -> RuntimeClient:
    source = SERVER_SOURCE.replace(
        "libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0", "libc.prctl(-1, 0, 0, 0, 0) == 0"
    ).replace('hasattr(os, "pidfd_open")', "False")
    assert source != SERVER_SOURCE
    process = subprocess.Popen(
        BOOTSTRAP,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=project,
        env=command_environment([]),
        start_new_session=True,
    )
    return RuntimeClient(PipeTransport(process), str(project), 20000, source=source)


def test_the_runtime_without_a_subreaper_or_pidfds_says_so_and_commands_end_promptly(project: Path) -> None:
    runtime = _runtime_without_subreaper_or_pidfds(project)
    try:
        fallbacks = runtime.hello["fallbacks"]
        assert any("no child subreaper" in f for f in fallbacks) and any("pidfd" in f for f in fallbacks)
        for _ in range(3):
            result = runtime.run("true", 30)
            assert (result.exit_code, result.timed_out) == (0, False)
        assert runtime.run("echo out; exit 4", 30).exit_code == 4
        marker = f"nanocode-test-{time.monotonic_ns()}"
        command = f"(setsid bash -c 'exec -a {marker} sleep 300' &); bash -c 'exec -a {marker} sleep 300' & sleep 300"
        assert runtime.run(command, 1).timed_out
        left = runtime.run(f"ps -eo args | grep -c '^{marker}' || true", 10).stdout.strip()
        assert left == "0"
    finally:
        runtime.close()


# -- gVisor


@pytest.mark.usefixtures("no_leftovers")
def test_a_goal_under_gvisor_completes_commands_and_says_so(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    runtime = gvisor_runtime(docker_engine)
    api.add(
        tools(call("shell", {"command": "true"}), call("shell", {"command": "echo made > made.txt; cat made.txt"})),
        message(f"{prompts.MARKER} ok"),
    )
    transcript = tmp_path / "t.jsonl"
    args = ["--sandbox", "--runtime", runtime, "--require-isolation", "gvisor", "--command-timeout", "60"]
    done = subprocess.run(
        _nanocode(*args, "-p", "g", "--project", str(project), "--transcript", str(transcript)),
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "runtime runsc (gVisor)" in done.stderr and "no child subreaper" in done.stderr
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    results = [r for r in records if r["kind"] == "tool"]
    assert len(results) == 2 and not [r for r in results if "timeout" in r["result"]], results
    assert (project / "made.txt").read_text() == "made\n"
    isolation = next(r for r in records if r["kind"] == "isolation")
    assert isolation["gvisor"] is True and any("subreaper" in f for f in isolation["fallbacks"])


@pytest.mark.usefixtures("no_leftovers")
def test_ls_l_of_the_project_under_gvisor(docker_engine: Any, sandbox_image: str, project: Path) -> None:
    config = SandboxConfig(
        project=str(project),
        image=sandbox_image,
        runtime=gvisor_runtime(docker_engine),
        mounts=project_mounts(str(project)),
    )
    executor = SandboxExecutor(docker_engine, config, 20000)
    try:
        (project / "a.txt").write_text("a")
        assert executor.read_file("a.txt") == "a"  # Python's stat (newfstatat) works
        listed = executor.run("ls -l a.txt", 10)
        if "Invalid argument" in listed.stderr:
            pytest.xfail("runsc 2022-12 fails statx(AT_NO_AUTOMOUNT), which coreutils 9 `ls -l` and `stat` use")
        assert listed.exit_code == 0 and "a.txt" in listed.stdout
    finally:
        executor.close()
