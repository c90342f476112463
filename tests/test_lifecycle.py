"""The lifecycle at its edges: signals, nanocode killed, a runtime that lies, settings that cannot work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE", "MODEL"))}
    return env | {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test"} | extra


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://",
        "http:///v1",
        "http://localhost:port/v1",
        "http://localhost:99999",
        "http://a b/v1",
        " https://openrouter.ai/api/v1",
        "ftp://example.com/v1",
        "localhost:8080/v1",
    ],
)
def test_a_base_url_that_cannot_work_is_one_line_and_exit_3(project: Path, tmp_path: Path, url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(project)],
        env=_env(tmp_path, INFERENCE_BASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "base URL" in done.stderr and "internal error" not in done.stderr
