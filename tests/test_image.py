"""The sandbox image: probed with testcontainers; its tag follows its build context."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nanocode.sandbox import image


def test_image_has_what_a_coding_agent_reaches_for(sandbox_image: str) -> None:
    from testcontainers.core.container import DockerContainer

    probe = (
        "set -e; bash --version | head -1; git --version; python3 --version; python3 -m pip --version; "
        "python3 -m venv /tmp/v && /tmp/v/bin/python -c 'print(\"venv ok\")'; curl --version | head -1; "
        "ps --version; find --version | head -1; grep --version | head -1; sed --version | head -1; "
        "make --version | head -1; test -d /etc/ssl/certs && echo certs ok"
    )
    container = DockerContainer(sandbox_image).with_command(["sleep", "infinity"])
    with container:
        result = container.exec(["bash", "-c", probe])
    output = result.output.decode()
    assert result.exit_code == 0, output
    for word in (
        "GNU bash",
        "git version",
        "Python 3",
        "pip",
        "venv ok",
        "curl",
        "procps",
        "findutils",
        "GNU grep",
        "GNU sed",
        "GNU Make",
        "certs ok",
    ):
        assert word in output


def test_tag_changes_with_the_build_context_and_the_base(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    first = image.image_tag(tmp_path, "base:1")
    assert first.startswith("nanocode-sandbox:")
    assert image.image_tag(tmp_path, "base:1") == first
    assert image.image_tag(tmp_path, "base:2") != first
    (tmp_path / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    assert image.image_tag(tmp_path, "base:1") != first


def test_the_shipped_context_is_the_repository_sandbox_folder() -> None:
    assert image.context_dir() == Path(__file__).resolve().parent.parent / "sandbox"
    assert "ARG BASE" in (image.context_dir() / "Dockerfile").read_text()


def test_build_failure_is_one_clear_line(docker_engine: Any) -> None:
    env = dict(os.environ, NANOCODE_SANDBOX_BASE="nanocode/no-such-base:0")
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "sandbox", "build", "--force"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1].startswith("nanocode: building the sandbox image failed")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
def test_docker_not_answering_is_one_clear_line(host: str, tmp_path: Path) -> None:
    env = dict(os.environ, DOCKER_HOST=host, OPENROUTER_API_KEY="k", XDG_STATE_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "--sandbox", "-p", "g", "--project", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanocode: "), done.stderr
    assert "Docker" in lines[0] or "docker" in lines[0].lower()
