"""The egress proxy's rules and its program on real local sockets, the presets, the audit's sum and
the host's trust store; the Docker side is in test_egress.py."""

import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode.egress import allowlist, trust
from nanocode.egress.audit import Audit
from nanocode.egress.goal import PROXY_SOURCE, host_proxy
from nanocode.egress.proxy import Refused, Rule, allowed_addresses, decide
from nanocode.errors import ConfigError, UsageError
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
    assert _decide(["10.0.0.0/8"], "10.200.0.1", 443) == "10.0.0.0/8"
    with pytest.raises(Refused, match=r"a private \(RFC 1918\) address"):
        _decide(["10.0.0.0/8"], "10.200.0.1", 22)  # an address rule has its ports too


@pytest.mark.parametrize(
    "spelling", ["172.17.1", "0254.0021.0.1", "2886795265", "0xac.0x11.0x0.0x1", "0x7f.1", "127.1"]
)
def test_an_address_written_another_way_is_refused_whatever_the_rules(spelling: str) -> None:
    with pytest.raises(Refused) as refused:
        _decide(["*"], spelling, 443)
    assert refused.value.rule == "ip-address" and "four decimal parts" in str(refused.value)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd12::1", "private"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a00:1::1", "inside 2002:a00:1::1"),
        ("64:ff9b::7f00:1", "loopback"),
        ("198.51.100.9", "engine's network"),
    ],
)
def test_a_name_resolving_into_a_refused_range_needs_an_address_rule(address: str, reason: str) -> None:
    found = [ipaddress.ip_address(address)]
    engine = [ipaddress.ip_network("198.51.100.0/24")]  # stands for one of the engine's own networks
    with pytest.raises(Refused) as refused:
        allowed_addresses([Rule("*")], "mirror.internal", 443, found, engine)
    assert refused.value.rule == "address" and reason in str(refused.value), str(refused.value)
    block = str(ipaddress.ip_network(address).supernet(new_prefix=ipaddress.ip_network(address).max_prefixlen - 8))
    assert allowed_addresses([Rule("*"), Rule(block)], "mirror.internal", 443, found, engine) == found
    with pytest.raises(Refused):  # on a port the address rule does not name
        port_rule = Rule(f"[{block}]:8080" if ":" in block else f"{block}:8080")
        allowed_addresses([Rule("*"), port_rule], "mirror.internal", 443, found, engine)


def test_public_addresses_pass_and_only_the_allowed_ones_are_kept() -> None:
    public, private = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    assert allowed_addresses([Rule("pypi.org")], "pypi.org", 443, [private, public]) == [public]
    documentation = ipaddress.ip_address("203.0.113.80")  # reserved, but no local network: where a proxy may answer
    assert allowed_addresses([Rule("pypi.org")], "pypi.org", 443, [documentation]) == [documentation]


@given(st.ip_addresses())
@settings(max_examples=300, deadline=None)
def test_an_address_is_reached_only_if_public_or_named_by_a_rule(address: Any) -> None:
    """The invariant: a connection goes to an address that is global and outside the engine's
    networks, or that an address rule names; never to one that only a name rule allowed."""
    engine = [ipaddress.ip_network("172.17.0.0/16")]
    seen = [address]
    if address.version == 6:  # what an IPv6 address carries of an IPv4 one counts too
        carried = address.ipv4_mapped or address.sixtofour
        if carried is None and address in ipaddress.ip_network("64:ff9b::/96"):
            carried = ipaddress.ip_address(int(address) & 0xFFFFFFFF)
        seen += [carried] if carried else []
    local = ("is_loopback", "is_link_local", "is_multicast", "is_unspecified")
    refused = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "255.255.255.255/32"]
    refused += ["fc00::/7"]
    public = not any(
        any(getattr(a, name) for name in local)
        or any(a.version == n.version and a in n for n in [*map(ipaddress.ip_network, refused), *engine])
        for a in seen
    )
    try:
        kept = allowed_addresses([Rule("*")], "any.example", 443, [address], engine)
    except Refused:
        kept = []
    assert (kept == [address]) == public, (address, kept)
    assert allowed_addresses([Rule("*"), Rule(str(address))], "a.example", 443, [address], engine) == [address]


@given(st.text(alphabet="0123456789abcdefx.", min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_nothing_inet_aton_reads_as_an_address_passes_as_a_name(spelling: str) -> None:
    try:
        socket.inet_aton(spelling)
    except OSError:
        return
    if spelling.count(".") == 3 and all(p.isdigit() and str(int(p)) == p for p in spelling.split(".")):
        return  # an address as written: refused as one unless a rule names it
    with pytest.raises(Refused):
        _decide(["*"], spelling, 443)


def test_presets_expand_and_values_split_on_commas() -> None:
    rules = allowlist.expand(["@python, Example.org", "pypi.org", "@github"])
    assert rules[:3] == ["pypi.org", "files.pythonhosted.org", "example.org"]
    assert "codeload.github.com" in rules and rules.count("pypi.org") == 1
    with pytest.raises(UsageError, match="no such preset"):
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
    ("args", "words", "code"),
    [
        (["--allow-host", "pypi.org"], "--allow-host works in the sandbox only", 3),
        (["--sandbox", "--allow-host", "@rust"], "--allow-host @rust: no such preset", 2),
        (["--sandbox", "--allow-host", "a.*.org"], "--allow-host a.*.org: a wildcard goes only at the start", 2),
        (["--sandbox", "--allow-host", "pypi.org:https"], "--allow-host pypi.org:https: not a port: 'https'", 2),
        (["--sandbox", "--allow-host", "*."], "--allow-host *.: not a host name or address", 2),
        (["--sandbox", "--allow-host", ""], "--allow-host '': an empty rule", 2),
        (["--sandbox", "--allow-host", ".pypi.org"], "--allow-host .pypi.org: not a host name or address", 2),
        (["--sandbox", "--allow-host", "pypi.org:"], "--allow-host pypi.org:: a port is missing after ':'", 2),
        (["--sandbox", "--allow-host", "172.17.1"], "--allow-host 172.17.1: an IPv4 address written other", 2),
    ],
)
def test_bad_allowlists_are_one_line_and_a_usage_or_config_error(
    args: list[str], words: str, code: int, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCODE_")} | {"OPENROUTER_API_KEY": "sk-test"}
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code and done.stderr.startswith(f"nanocode: {words}"), done.stderr
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


def test_a_name_that_resolves_to_loopback_is_refused_unless_an_address_rule_covers_it(
    origin: ThreadingHTTPServer,
) -> None:
    port = origin.server_address[1]
    refused = Running({"allow": [f"localhost:{port}"]})
    status, body = _get(f"http://localhost:{port}/x", refused.url)
    assert status == 403 and "refused by rule address: localhost resolves to 127.0.0.1, a loopback address" in body
    allowed = Running({"allow": [f"localhost:{port}", f"127.0.0.0/8:{port}"]})
    assert _get(f"http://localhost:{port}/y", allowed.url)[0] == 200
    assert [(t["rule"], t["allowed"]) for t in refused.told()] == [("address", False)]
    [told] = allowed.told()
    assert (told["rule"], told["address"], told["allowed"]) == (f"localhost:{port}", "127.0.0.1", True)


# What a hostile or broken client may send: each is answered (or dropped) and recorded once.
MALFORMED = [
    b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET ftp://x/ HTTP/1.1\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\n\r\n",
    b"GET http://x:0/ HTTP/1.1\r\n\r\n",
    b"GET http://x:99999/ HTTP/1.1\r\n\r\n",
    b"CONNECT :443 HTTP/1.1\r\n\r\n",
    b"CONNECT " + b"a" * 70 + b".example.org:443 HTTP/1.1\r\n\r\n",
    b"CONNECT " + b"a." * 200 + b"org:443 HTTP/1.1\r\n\r\n",
    b"CONNECT \xff\xfe\xfd.example.org:443 HTTP/1.1\r\n\r\n",
    b"CONNECT xn--\xe2\x98\x83.example.org:443 HTTP/1.1\r\n\r\n",
    b"CONNECT 0x7f.0.0.1:443 HTTP/1.1\r\n\r\n",
    b"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n",
    b"CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1\r\n\r\n",
    b"GET http://a.example.org/ HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
    b"GET http://\x00/ HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    b"GET http://a.example.org/",  # then half-closed: the request never ends
    b"",  # connected, half-closed at once
]


def _throw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            return b""
    return answer


def test_malformed_requests_are_each_answered_and_recorded_and_the_proxy_stays_up(origin: ThreadingHTTPServer) -> None:
    port = origin.server_address[1]
    proxy = Running({"allow": ["*.example.org", f"127.0.0.1:{port}"]})
    answers = [_throw(proxy.port, data) for data in MALFORMED]
    for data, answer in zip(MALFORMED, answers, strict=True):
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"403", b"502"), (data[:80], answer[:200])
        assert b"Internal Server Error" not in answer
    assert _get(f"http://127.0.0.1:{port}/still-up", proxy.url)[0] == 200
    told = proxy.told()  # checks that every connection it told of has its record
    assert len(told) == len(MALFORMED) + 1
    long_label = next(t for t in told if t["host"].startswith("a" * 70))
    assert (long_label["rule"], long_label["allowed"]) == ("bad-name", False)
    spelled = {t["host"]: t["rule"] for t in told if t["host"] in ("0x7f.0.0.1", "2130706433", "::ffff:127.0.0.1")}
    assert spelled == dict.fromkeys(("0x7f.0.0.1", "2130706433", "::ffff:127.0.0.1"), "ip-address")


@given(st.binary(max_size=300))
@settings(max_examples=40, deadline=None)
def test_whatever_the_bytes_the_proxy_answers_and_records_once(data: bytes) -> None:
    proxy = _FUZZED.get("proxy")
    if proxy is None:
        proxy = _FUZZED["proxy"] = Running({"allow": ["*.example.org"]})
    before = _FUZZED.setdefault("count", 0)
    _throw(proxy.port, data + b"\r\n\r\n")
    _FUZZED["count"] = before + 1


_FUZZED: dict[str, Any] = {}


def test_the_fuzzed_proxy_recorded_every_connection() -> None:
    proxy = _FUZZED.pop("proxy", None)
    if proxy is None:
        pytest.skip("runs after the fuzz test")
    told = proxy.told()
    assert len(told) == _FUZZED.pop("count")
    assert not [t for t in told if "internal error" in t.get("error", "")]


def test_a_fault_in_a_connections_handler_is_answered_500_and_still_recorded() -> None:
    from nanocode.egress import proxy as program

    told: list[dict[str, Any]] = []

    class Faulty(program.Proxy):
        def open(self, client: socket.socket, record: dict[str, Any]) -> socket.socket:
            record["host"] = "a.example.org"
            raise KeyError("a fault of the proxy's own")

        def tell(self, event: dict[str, Any]) -> None:
            told.append(event)

    inside, outside = socket.socketpair()
    Faulty({"allow": ["*.example.org"]}).handle(inside, 7)
    assert outside.recv(200).startswith(b"HTTP/1.1 500 Internal Server Error")
    [event] = told
    assert event["number"] == 7 and event["connection"]["host"] == "a.example.org"
    assert event["connection"]["error"] == 'internal error: KeyError: "a fault of the proxy\'s own"'
    outside.close()


def test_a_client_that_never_finishes_its_request_is_timed_out_and_still_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nanocode.egress import proxy as program

    monkeypatch.setattr(program, "HEAD_TIMEOUT", 0.5)  # 60 s in the proxy: a client cannot hold a thread longer
    told: list[dict[str, Any]] = []

    class Told(program.Proxy):
        def tell(self, event: dict[str, Any]) -> None:
            told.append(event)

    inside, outside = socket.socketpair()
    outside.sendall(b"CONNECT a.example.org:443 HTTP/1.1\r\nHost: a.example.org")  # and nothing more
    started = time.monotonic()
    Told({"allow": ["*.example.org"]}).handle(inside, 5)
    assert time.monotonic() - started < 5
    [event] = told
    assert event["number"] == 5 and event["connection"]["allowed"] is False
    assert "timed out" in event["connection"]["error"], event
    outside.close()


def test_the_proxy_ends_when_its_owner_is_silent_past_the_lease_with_its_stdin_still_open() -> None:
    running = Running({"lease": 1})
    time.sleep(0.5)
    assert running.process.poll() is None
    assert running.process.stdin is not None
    running.process.stdin.write(b"\n")  # a heartbeat
    running.process.stdin.flush()
    assert running.process.wait(10) == 0  # nothing more came: the lease ran out
