"""The presets against the real registries, through the goal's egress proxy: pip, npm and apt
install or fetch something real (`apt-get install` into the sandbox's root filesystem, writable by
default with @debian). Behind a TLS-inspecting proxy, each works with the host's CA and
fails in seconds, with a clear line, without it (--no-host-ca). github.com is a preset too, but
this machine cannot reach it: git over https through the proxy is tried in test_egress.py."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanocode import settings, wiring
from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, text, tools

pytestmark = pytest.mark.usefixtures("no_leftovers", "sandbox_image")

# Each command prints how long it took, last: `took N`.
TIMED = "start=$(date +%s%N); ( {command} ) 2>&1; echo; echo took $(( ($(date +%s%N) - start) / 1000000 ))"
HTTPS_SOURCES = "deb https://deb.debian.org/debian bookworm main"
COMMANDS = {
    "pip": "pip install --user -q --no-cache-dir iniconfig==2.0.0 "
    "&& python3 -c 'import iniconfig; print(\"iniconfig\")'",
    "npm": "mkdir -p /tmp/n && cd /tmp/n && npm install --no-audit --no-fund is-number >/dev/null "
    "&& node -p 'require(\"is-number\")(5)'",
    # @debian makes the root filesystem writable, and nothing else: every capability stays dropped.
    "root": "touch /usr/local/bin/written && grep CapEff /proc/self/status",
    "apt-http": "apt-get update -qq && apt-get install -y -qq --no-install-recommends jq >/dev/null && jq --version",
    "apt-https": f"echo '{HTTPS_SOURCES}' > /tmp/https.list && LIST='-o Dir::Etc::SourceList=/tmp/https.list "
    "-o Dir::Etc::SourceParts=/nonexistent' && apt-get -qq $LIST update "
    "&& apt-get $LIST install -y -qq --no-install-recommends hello >/dev/null && hello",
}


def _goal(api: ScriptedAPI, project: Path, tmp_path: Path, *extra: str) -> dict[str, tuple[str, int]]:
    """Runs each command in one goal on the @python, @npm and @debian allowlist: its output and its milliseconds."""
    api.add(*[tools(call("shell", {"command": TIMED.format(command=c)})) for c in COMMANDS.values()])
    api.add(message(f"{MARKER} done"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url}
    presets = ["--allow-host", "@python", "--allow-host", "@npm", "--allow-host", "@debian"]
    args = ["--sandbox", "-p", "g", "--project", str(project), *presets, *extra]
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "sandbox: its root filesystem is writable for the goal, so apt-get install works" in done.stderr
    results = [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]
    timed = {}
    for name, result in zip(COMMANDS, results, strict=True):
        body, _, took = result.rstrip().rpartition("\ntook ")
        timed[name] = (body, int(took))
    return timed


def test_the_presets_install_through_the_proxy_and_fail_fast_without_the_hosts_ca(
    api: ScriptedAPI, project: Path, tmp_path: Path, docker_engine: Any
) -> None:
    started = time.monotonic()
    ok = _goal(api, project, tmp_path)
    assert ok["pip"][0].rstrip().endswith("\niniconfig"), ok["pip"]
    assert ok["npm"][0].strip() == "true", ok["npm"]
    assert ok["root"][0].split() == ["CapEff:", "0000000000000000"], ok["root"]
    assert ok["apt-http"][0].rstrip().endswith("jq-1.6") and "W: " not in ok["apt-http"][0], ok["apt-http"]
    assert ok["apt-https"][0].rstrip().endswith("Hello, world!"), ok["apt-https"]
    assert time.monotonic() - started < 120
    without = _goal(api, project, tmp_path, "--no-host-ca")
    if without["pip"][0].rstrip().endswith("\niniconfig"):
        pytest.skip("outbound HTTPS here is not re-signed by a TLS-inspecting proxy: nothing to fail without its CA")
    clear = {
        "pip": "CERTIFICATE_VERIFY_FAILED",
        "npm": "npm ERR! code SELF_SIGNED_CERT_IN_CHAIN",
        "apt-https": "Certificate verification failed",
    }
    for name, words in clear.items():
        output, millis = without[name]
        assert words in output, (name, output)
        print(name, millis, "ms without the host CA")
        assert millis < 10000, (name, millis, output)
    assert without["apt-http"][0].rstrip().endswith("jq-1.6")  # plain http needs no CA


@pytest.mark.parametrize(
    ("given", "rules", "writable"),
    [(None, (), False), (None, ("@python,@debian",), True), (False, ("@debian",), False), (True, (), True)],
)
def test_the_root_is_writable_when_asked_or_with_debian(
    given: bool | None, rules: tuple[str, ...], writable: bool
) -> None:
    assert settings._writable_root(given, rules) is writable


def test_a_sandbox_not_run_as_root_is_told_apt_get_install_will_not_work() -> None:
    line = wiring._writable_root_line("1000:1000")
    assert "apt-get install needs root in it and commands run as uid 1000" in line
