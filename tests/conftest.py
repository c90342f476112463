import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.scripted_api import ScriptedAPI

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
# CI (HYPOTHESIS_PROFILE=ci) tries the same generated cases every run, so that its verdict is the
# change's; a run elsewhere tries new ones each time, and a failing case found so becomes an @example.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
# The `second_engine` fixture: a Docker engine that cannot see the host's paths (tests/second_engine.py).
pytest_plugins = ["tests.second_engine"]


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    server = ScriptedAPI().start()
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see none of the developer's settings, and write their transcripts under tmp."""
    for name in list(os.environ):
        if (
            name.startswith("NANOCODE_")
            and name not in ("NANOCODE_REQUIRE_DOCKER", "NANOCODE_TEST_GVISOR", "NANOCODE_TEST_SECOND_ENGINE")
        ) or name in (
            "OPENROUTER_API_KEY",
            "INFERENCE_BASE_URL",
            "MODEL_NAME",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    from tests.docker_support import docker_client

    client = docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_engine) -> str:  # type: ignore[no-untyped-def]
    from nanocode.sandbox.image import ensure_image

    return ensure_image(docker_engine, print)


@pytest.fixture
def no_leftovers(docker_engine, tmp_path):  # type: ignore[no-untyped-def]
    """Fails the test if it leaves a container or a network behind for a project of its own (and removes it)."""
    from nanocode.sandbox.container import ours, remove

    yield
    left = [c for c in ours(docker_engine) if c.labels.get("nanocode.project", "").startswith(str(tmp_path))]
    for c in left:
        remove(docker_engine, c.id)
    networks = [
        n["Name"]
        for n in docker_engine.api.networks(filters={"label": "nanocode"})
        if (n.get("Labels") or {}).get("nanocode.project", "").startswith(str(tmp_path))
    ]
    for name in networks:
        docker_engine.api.remove_network(name)
    assert not left, f"containers left behind: {[c.name for c in left]}"
    assert not networks, f"networks left behind: {networks}"


@pytest.fixture
def no_leftover_volumes(docker_engine, tmp_path):  # type: ignore[no-untyped-def]
    """Fails the test if it leaves a nanocode volume (a workspace's layer) behind for a project of its own."""
    yield
    rows = docker_engine.api.volumes(filters={"label": "nanocode"}).get("Volumes") or []
    left = [r["Name"] for r in rows if (r.get("Labels") or {}).get("nanocode.project", "").startswith(str(tmp_path))]
    for name in left:
        docker_engine.api.remove_volume(name, force=True)
    layers = tmp_path / "state" / "nanocode" / "layers"
    assert not left, f"volumes left behind: {left}"
    assert not (layers.is_dir() and any(layers.iterdir())), "a workspace layer was left behind"
