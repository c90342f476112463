"""An image of the user's, built FROM nanocode's sandbox image by `nanocode sandbox build --file`:
behind a TLS-inspecting proxy, its RUN steps fetch over HTTPS trusting the host's CA bundle, and
the image made keeps only its own trust store."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

DOCKERFILE = """ARG SANDBOX
FROM ${SANDBOX}
RUN pip install --no-cache-dir -q iniconfig==2.0.0 && python3 -c 'import iniconfig; print("fetched")' > /fetched
"""


def _build(tmp_path: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sandbox.Dockerfile").write_text(DOCKERFILE)
    args = ["sandbox", "build", "--file", str(tmp_path / "sandbox.Dockerfile"), "--tag", tag, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCODE_")}
    return subprocess.run(
        [sys.executable, "-m", "nanocode", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _store(docker_engine: Any, image: str) -> bytes:
    return bytes(docker_engine.containers.run(image, ["md5sum", "/etc/ssl/certs/ca-certificates.crt"], remove=True))


def test_a_custom_image_fetches_over_https_in_its_build_and_keeps_its_own_trust(
    docker_engine: Any, sandbox_image: str, tmp_path: Path
) -> None:
    tag = f"nanocode-test-custom:{tmp_path.name[-20:].lower().replace('_', '-')}"
    try:
        done = _build(tmp_path, tag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == tag
        assert docker_engine.containers.run(tag, ["cat", "/fetched"], remove=True) == b"fetched\n"
        assert _store(docker_engine, tag) == _store(docker_engine, sandbox_image)  # the host's trust is not kept
        without = _build(tmp_path, tag + "-no-ca", "--no-host-ca")
        if without.returncode == 0:
            pytest.skip("outbound HTTPS here is not re-signed by a TLS-inspecting proxy")
        assert without.returncode == 3 and len(without.stderr.strip().splitlines()[-1:]) == 1
        last = without.stderr.strip().splitlines()[-1]
        assert last.startswith("nanocode: building the image failed: ") and "CERTIFICATE_VERIFY_FAILED" in last, last
    finally:
        for name in (tag, tag + "-no-ca"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(docker_engine.images.get(name).id)  # by id: its tag and parents go
