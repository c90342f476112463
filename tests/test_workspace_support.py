"""The helpers that run nanocode in tests run it as on a fresh machine, whoever runs the tests."""

from pathlib import Path

import pytest

from tests.workspace_support import nanocode


def test_a_command_without_an_endpoint_sees_none_of_the_hosts_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOCODE_CPUS", "not a value nanocode takes")  # as `diff last`/`apply last` run
    done = nanocode(tmp_path, None, "changes", cwd=tmp_path)
    assert "NANOCODE_CPUS" not in done.stderr and done.returncode == 0, done.stderr
