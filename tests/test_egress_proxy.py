"""The egress proxy's rules and its program on real local sockets, the presets, the audit's sum and
the host's trust store; the Docker side is in test_egress.py."""

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from nanocode.egress import allowlist, trust
from nanocode.egress.audit import Audit
from nanocode.egress.goal import PROXY_SOURCE, host_proxy
from nanocode.egress.proxy import Refused, Rule, decide
from nanocode.errors import ConfigError
from nanocode.runtime.client import BOOTSTRAP


def _decide(rules: list[str], host: str, port: int) -> str:
    return decide([Rule(text) for text in rules], host, port)


def test_exact_names_wildcards_and_ports() -> None:
    rules = ["pypi.org", "*.example.org", "git.internal:8443"]
    assert _decide(rules, "PyPI.org.", 443) == "pypi.org"
    assert _decide(rules, "pypi.org", 80) == "pypi.org"
    assert _decide(rules, "a.b.example.org", 443) == "*.example.org"
    assert _decide(rules, "git.internal", 8443) == "git.internal:8443"
    with pytest.raises(Refused) as refused:
        _decide(rules, "example.org", 443)  # the wildcard is for subdomains
    assert refused.value.rule == "not-allowed" and "pypi.org, *.example.org" in str(refused.value)
    with pytest.raises(Refused) as refused:
        _decide(rules, "pypi.org", 22)
    assert refused.value.rule == "port" and "port 80, 443 only (rule pypi.org)" in str(refused.value)
    with pytest.raises(Refused) as refused:
        _decide(rules, "notpypi.org", 443)
    assert refused.value.rule == "not-allowed"
    with pytest.raises(Refused):
        _decide(rules, "pypi.org.evil.com", 443)


def test_addresses_are_refused_unless_allowed_by_address() -> None:
    for host in ("93.184.216.34", "::1", "[::1]"):
        with pytest.raises(Refused) as refused:
            _decide(["*", "*.example.org"], host, 443)
        assert refused.value.rule == "ip-address"
    assert _decide(["10.1.2.3:8080"], "10.1.2.3", 8080) == "10.1.2.3:8080"
    assert _decide(["[::1]:8080"], "[::1]", 8080) == "[::1]:8080"


@pytest.mark.parametrize("bad", ["exa*mple.org", "a.*.org", "host:99999", "host:x", "a b", "http://x/y"])
def test_bad_rules_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="--allow-host"):
        allowlist.expand([bad])


def test_presets_expand_and_values_split_on_commas() -> None:
    rules = allowlist.expand(["@python, Example.org", "pypi.org", "@github"])
    assert rules[:3] == ["pypi.org", "files.pythonhosted.org", "example.org"]
    assert "codeload.github.com" in rules and rules.count("pypi.org") == 1
    with pytest.raises(ConfigError, match="no such preset"):
        allowlist.expand(["@rust"])


def test_the_network_page_lists_every_presets_hosts() -> None:
    page = (Path(__file__).parent.parent / "docs" / "network.md").read_text()
    for name, hosts in allowlist.PRESETS.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}`"))
        assert all(f"`{host}`" in row for host in hosts), name


def test_the_audit_sums_a_goal_in_one_line() -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def record(self, kind: str, **fields: Any) -> None:
            recorded.append((kind, fields))

    audit = Audit(Recorder())
    assert audit.summary() == "network: no connections"
    for host, allowed in [("a.org", True), ("a.org", True), ("b.org", True), ("x.com", False), ("x.com", False)]:
        audit.add({"host": host, "port": 443, "allowed": allowed, "sent": 1, "evil": "dropped", "rule": 7})
    audit.add("not a record")
    assert audit.summary() == "network: 3 connections to 2 hosts allowed, 2 refused: x.com"
    assert recorded[0] == ("network", {"host": "a.org", "port": 443, "allowed": True, "sent": 1})
    assert len(recorded) == 5


def test_the_host_bundle_is_found(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    link = tmp_path / "link.pem"
    link.symlink_to(bundle)
    assert trust.host_bundle({"SSL_CERT_FILE": str(tmp_path / "missing"), "CURL_CA_BUNDLE": str(link)}) == str(bundle)
    found = trust.host_bundle({})
    assert found is None or found == os.path.realpath(next(b for b in trust.BUNDLES if os.path.isfile(b)))
    assert set(trust.environment()) >= {"SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO"}


def test_host_proxy_variables() -> None:
    found = host_proxy({"https_proxy": "http://u:p@proxy.corp:3128", "NO_PROXY": "localhost,.corp"})
    assert found == {"host_proxy": {"https": "http://u:p@proxy.corp:3128"}, "no_proxy": ["localhost", ".corp"]}
    with pytest.raises(ConfigError, match=r"host's http_proxy: only http:// proxies are supported, not https://$"):
        host_proxy({"HTTP_PROXY": "https://u:secret@proxy.corp"})


# The proxy program itself, as a local process on real sockets.


class Running:
    def __init__(self, settings: dict[str, Any]):
        self.process = subprocess.Popen(
            [sys.executable, *BOOTSTRAP[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(PROXY_SOURCE).encode() + b"\n")
        self.process.stdin.write(json.dumps({"bind": "127.0.0.1", "port": 0, **settings}).encode() + b"\n")
        self.process.stdin.flush()
        self.port = json.loads(self.process.stdout.readline())["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    def told(self) -> list[dict[str, Any]]:
        """Ends the proxy (its stdin closes, as when nanocode goes) and returns what it told."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.close()
        lines = self.process.stdout.read().splitlines()
        self.process.wait(10)
        told = [json.loads(line) for line in lines]
        opened = [t["open"] for t in told if "open" in t]
        records = [t for t in told if "connection" in t]
        assert sorted(t["number"] for t in records) == opened  # each connection told of, and its end
        return [t["connection"] for t in records]


@pytest.fixture
def origin() -> Iterator[ThreadingHTTPServer]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{self.path} {self.headers.get('Host')} {self.headers.get('Proxy-Authorization')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _get(url: str, proxy: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_proxy_forwards_allowed_requests_and_refuses_the_rest(origin: ThreadingHTTPServer) -> None:
    port = origin.server_address[1]
    proxy = Running({"allow": [f"127.0.0.1:{port}"]})
    assert _get(f"http://127.0.0.1:{port}/a?b=1", proxy.url) == (200, f"/a?b=1 127.0.0.1:{port} None")
    status, body = _get(f"http://localhost:{port}/x", proxy.url)
    assert status == 403 and "refused by rule not-allowed: localhost is not on the allowlist" in body
    told = sorted(proxy.told(), key=lambda t: t["host"])  # told as each ends
    assert [(t["host"], t["allowed"], t["rule"]) for t in told] == [
        ("127.0.0.1", True, f"127.0.0.1:{port}"),
        ("localhost", False, "not-allowed"),
    ]
    assert told[0]["received"] > 0 and told[0]["sent"] > 0 and told[1]["received"] == 0


def test_the_proxy_goes_out_through_the_hosts_proxy(origin: ThreadingHTTPServer) -> None:
    """Plain HTTP goes to the host's proxy in absolute form with its credentials; CONNECT chains through it."""
    port = origin.server_address[1]
    upstream = Running({"allow": [f"127.0.0.1:{port}"]})
    proxy = Running(
        {
            "allow": ["example.test", f"127.0.0.1:{port}"],
            # Here the origin stands for the host's proxy for plain HTTP: it shows what it was sent.
            "host_proxy": {"http": f"http://user:secret@127.0.0.1:{port}", "https": f"127.0.0.1:{upstream.port}"},
        }
    )
    status, body = _get("http://example.test/plain", proxy.url)
    assert (status, body) == (200, "http://example.test/plain example.test Basic dXNlcjpzZWNyZXQ=")
    tunnel = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    tunnel.set_tunnel("127.0.0.1", port)
    tunnel.request("GET", "/tunnelled")
    assert tunnel.getresponse().read().decode() == f"/tunnelled 127.0.0.1:{port} None"
    tunnel.close()
    assert sorted((t["method"], t["host"], t["allowed"]) for t in proxy.told()) == [
        ("CONNECT", "127.0.0.1", True),
        ("GET", "example.test", True),
    ]
    assert [(t["method"], t["host"], t["allowed"]) for t in upstream.told()] == [("CONNECT", "127.0.0.1", True)]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--allow-host", "pypi.org"], "--allow-host works in the sandbox only"),
        (["--sandbox", "--allow-host", "@rust"], "--allow-host @rust: no such preset"),
        (["--sandbox", "--allow-host", "a.*.org"], "--allow-host a.*.org: a wildcard goes only at the start"),
        (["--sandbox", "--allow-host", "pypi.org:https"], "--allow-host pypi.org:https: not a port: 'https'"),
    ],
)
def test_bad_allowlists_are_one_line_and_exit_3(args: list[str], words: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCODE_")} | {"OPENROUTER_API_KEY": "sk-test"}
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and done.stderr.startswith(f"nanocode: {words}"), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_the_allowlist_variable_takes_a_comma_separated_list(tmp_path: Path) -> None:
    from nanocode.cli.app import cli

    seen: dict[str, Any] = {}

    @cli.command("show-options")
    @click.pass_obj
    def show(options: dict[str, Any]) -> None:
        seen.update(options)

    try:
        runner = CliRunner(env={"NANOCODE_ALLOW_HOSTS": "@python, example.org,*.x.org"})
        assert runner.invoke(cli, ["show-options"]).exit_code == 0
    finally:
        cli.commands.pop("show-options")
    assert allowlist.expand(seen["allow_hosts"]) == ["pypi.org", "files.pythonhosted.org", "example.org", "*.x.org"]
