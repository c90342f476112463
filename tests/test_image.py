"""The sandbox image: probed with testcontainers; its tag follows its build context."""

import os
import secrets
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
        "make --version | head -1; node --version; npm --version; test -d /etc/ssl/certs && echo certs ok"
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
        "v18.",
        "certs ok",
    ):
        assert word in output


def test_npm_works_as_any_uid_on_a_read_only_root_with_home_on_a_tmpfs(sandbox_image: str) -> None:
    """As nanocode runs it: npm's cache and logs go to $HOME/.npm, on the tmpfs. No network needed:
    a package packed here is installed from its tarball."""
    from testcontainers.core.container import DockerContainer

    probe = (
        "set -e; mkdir /tmp/tiny /tmp/app; cd /tmp/tiny; echo 'module.exports = 42;' > index.js; "
        'echo \'{"name": "tiny", "version": "1.0.0"}\' > package.json; npm pack -q; '
        "cd /tmp/app; npm install --offline --no-audit --no-fund /tmp/tiny/tiny-1.0.0.tgz >/dev/null; "
        "node -p 'require(\"tiny\")'; ls $HOME/.npm; id -u"
    )
    container = DockerContainer(sandbox_image).with_command(["sleep", "infinity"])
    container.with_kwargs(user="54321:54321", read_only=True, network_mode="none")
    for folder in ("/tmp", "/home/sandbox"):
        container.with_tmpfs_mount(folder, "rw,exec,nosuid,nodev,size=64m,mode=1777")
    with container:
        result = container.exec(["bash", "-c", probe])
    output = result.output.decode()
    assert result.exit_code == 0, output
    assert output.endswith("42\n_cacache\n_logs\n_update-notifier-last-checked\n54321\n"), output


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


def test_a_failed_build_leaves_no_layer_of_its_own(docker_engine: Any, sandbox_image: str, tmp_path: Path) -> None:
    token = secrets.token_hex(8)  # a step no cache holds
    (tmp_path / "sandbox.Dockerfile").write_text(
        f"ARG SANDBOX\nFROM ${{SANDBOX}}\nRUN echo {token} > /made\nENV MADE={token}\nRUN echo {token} && false\n"
    )
    before = {image.id for image in docker_engine.images.list(all=True)}
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "sandbox", "build", "--file", str(tmp_path / "sandbox.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("nanocode: building the image failed: The command")
    others = {image.id for image in docker_engine.images.list(all=True)} - before  # the engine is shared
    assert [i for i in others if token in str(docker_engine.api.inspect_image(i))] == []
