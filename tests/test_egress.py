"""The allowlist against the real engine: a goal's sandbox on a network of its own, the egress proxy
its only way out, local HTTP(S) servers with a test CA as the outside world."""

import base64
import glob
import hashlib
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from nanocode.sandbox import container as lifecycle
from tests.scripted_api import ScriptedAPI, call, message, text, tools

pytestmark = pytest.mark.usefixtures("no_leftovers")

# The outside world's names: the proxy reaches them by these aliases on the test's network.
ALLOWED = ["web.example.test", "pkgs.example.test", "*.code.example.test"]
SERVER = r"""
import functools, http.server, os, ssl, subprocess, sys, threading

class Handler(http.server.SimpleHTTPRequestHandler):
    # Files from /srv/www; git's smart HTTP (git http-backend) for the repositories in /srv/git.
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/nanocode/"):
            return self.git()
        return super().do_GET()

    def do_POST(self):
        self.git()

    def git(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": "/srv/git", "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "REMOTE_ADDR": self.client_address[0],
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""), "PATH": os.environ["PATH"],
               "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        fields = [line.decode().partition(":") for line in head.splitlines()]
        status = [int(v.split()[0]) for k, _, v in fields if k.lower() == "status"]
        self.send_response(status[0] if status else 200)
        for name, _, value in fields:
            if name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

handler = functools.partial(Handler, directory="/srv/www")
plain = http.server.ThreadingHTTPServer(("0.0.0.0", 80), handler)
tls = http.server.ThreadingHTTPServer(("0.0.0.0", 443), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/srv/tls/server.crt", "/srv/tls/server.key")
tls.socket = context.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("serving", flush=True)
tls.serve_forever()
"""


@dataclass
class World:
    network: str
    address: str  # the server's, on the test's network
    ca: Path
    subnet: str  # the test's network's: private, so its names pass only with this address rule


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A test CA and a server certificate it signed, for every name of the outside world."""
    folder.mkdir()
    ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    _openssl(
        folder,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        *ca,
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:*.example.test,DNS:*.code.example.test,DNS:github.com,DNS:*.github.com\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        folder,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=web",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    _openssl(
        folder,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    )
    os.chmod(folder / "server.key", 0o644)  # read by the server's container


def _wheel(folder: Path) -> None:
    """A PEP 503 index with one tiny wheel."""
    data = io.BytesIO()
    files = {
        "tiny.py": "VALUE = 42\n",
        "tiny-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tiny\nVersion: 0.1\n",
        "tiny-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(data, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("tiny-0.1.dist-info/RECORD", "".join(f"{name},,\n" for name in [*files, "RECORD"]))
    name = "tiny-0.1-py3-none-any.whl"
    (folder / "packages").mkdir(parents=True)
    (folder / "packages" / name).write_bytes(data.getvalue())
    (folder / "simple" / "tiny").mkdir(parents=True)
    digest = hashlib.sha256(data.getvalue()).hexdigest()
    (folder / "simple" / "tiny" / "index.html").write_text(
        f'<html><body><a href="../../packages/{name}#sha256={digest}">{name}</a></body></html>\n'
    )


def _npm_registry(folder: Path) -> None:
    """An npm registry with one tiny package: its metadata at /npm/tiny, its tarball beside."""
    manifest = json.dumps({"name": "tiny", "version": "1.0.0", "main": "index.js"}).encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        for name, content in (("package/package.json", manifest), ("package/index.js", b"module.exports = 42;\n")):
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(content), 0o644
            archive.addfile(member, io.BytesIO(content))
    tarball = data.getvalue()
    (folder / "npm-tarballs").mkdir()
    (folder / "npm-tarballs" / "tiny-1.0.0.tgz").write_bytes(tarball)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    dist = {
        "tarball": "https://pkgs.example.test/npm-tarballs/tiny-1.0.0.tgz",
        "shasum": hashlib.sha1(tarball).hexdigest(),
        "integrity": integrity,
    }
    version = {"name": "tiny", "version": "1.0.0", "main": "index.js", "dist": dist}
    metadata = {"name": "tiny", "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": version}}
    (folder / "npm").mkdir()
    (folder / "npm" / "tiny").write_text(json.dumps(metadata))


def _repository(folder: Path, served: Path) -> None:
    """A bare git repository served as files (git's dumb HTTP), and one served by git http-backend
    alone (git's smart HTTP), in `served`."""
    work = folder.parent / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    (work / "README").write_text("cloned through the proxy\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(folder / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(folder / "repo.git"), "update-server-info"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(served / "nanocode" / "tiny.git")], check=True)


@pytest.fixture(scope="module")
def world(docker_engine: Any, sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server (HTTP on 80, HTTPS on 443) with every name of the outside world, on a network of the test's."""
    root = tmp_path_factory.mktemp("world")
    _certificates(root / "tls")
    www = root / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello from outside\n")
    _wheel(www)
    _npm_registry(www)
    _repository(www, root / "git")
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else path.stat().st_mode | 0o644)
    network = f"nanocode-egress-test-{uuid.uuid4().hex[:8]}"
    docker_engine.api.create_network(network, driver="bridge")
    server = None
    try:
        aliases = ["web.example.test", "pkgs.example.test", "git.code.example.test", "denied.example.test"]
        aliases += ["github.com", "codeload.github.com", "gist.github.com"]  # @github, served here
        api = docker_engine.api
        server = api.create_container(
            sandbox_image,
            ["python3", "-c", SERVER],
            entrypoint="",
            name=f"{network}-server",
            user="0:0",
            host_config=api.create_host_config(
                network_mode=network,
                binds=[f"{www}:/srv/www:ro", f"{root / 'tls'}:/srv/tls:ro", f"{root / 'git'}:/srv/git:ro"],
            ),
            networking_config=api.create_networking_config({network: api.create_endpoint_config(aliases=aliases)}),
        )["Id"]
        api.start(server)
        deadline = time.monotonic() + 30
        while b"serving" not in api.logs(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        address = api.inspect_container(server)["NetworkSettings"]["Networks"][network]["IPAddress"]
        subnet = api.inspect_network(network)["IPAM"]["Config"][0]["Subnet"]
        yield World(network, address, root / "tls" / "ca.crt", subnet)
    finally:
        if server is not None:
            lifecycle.remove(docker_engine, server)
        docker_engine.api.remove_network(network)


def _env(tmp_path: Path, api: ScriptedAPI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    return env | {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "OPENROUTER_API_KEY": "sk-test",
        "INFERENCE_BASE_URL": api.url,
        **extra,
    }


def _nanocode(world: World, project: Path, *args: str) -> list[str]:
    hosts = [arg for host in [*ALLOWED, world.subnet] for arg in ("--allow-host", host)]
    return [
        sys.executable,
        "-m",
        "nanocode",
        "--sandbox",
        "--project",
        str(project),
        "--network",
        world.network,
        *hosts,
        *args,
    ]


def _ours(docker_engine: Any, key: str, value: str) -> tuple[list[str], list[str]]:
    """The containers and networks of nanocode's with this label (owner.pid, project)."""
    label = f"nanocode.{key}={value}"
    containers = [c["Names"][0] for c in docker_engine.api.containers(all=True, filters={"label": label})]
    networks = [n["Name"] for n in docker_engine.api.networks(filters={"label": label})]
    return containers, networks


def _results(api: ScriptedAPI) -> list[str]:
    return [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]


# A DNS query for a name, sent straight to Docker's resolver: what comes back, if anything.
DNS_QUERY = r"""
import socket, struct, sys
name = sys.argv[1]
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.sendto(query, ("127.0.0.11", 53))
    reply = s.recv(512)
    print("rcode", reply[3] & 15, "answers", struct.unpack(">H", reply[6:8])[0])
except OSError as exc:
    print("no answer:", type(exc).__name__)
"""


def test_allowed_hosts_answer_and_nothing_else_gets_out(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    (project / "dns.py").write_text(DNS_QUERY)
    commands = [
        "curl -sS https://web.example.test/hello.txt && curl -sS http://web.example.test/hello.txt",
        "pip download tiny --no-deps -q --index-url https://pkgs.example.test/simple -d /tmp/dl && ls /tmp/dl",
        "git clone -q https://git.code.example.test/repo.git /tmp/clone && cat /tmp/clone/README",
        "curl -sS http://denied.example.test/hello.txt; curl -sS https://denied.example.test/hello.txt; echo exit=$?",
        "curl -sS http://web.example.test:8080/; echo",
        'curl -sS http://10.255.255.1/hello.txt; echo; python3 -c "import urllib.error as e, urllib.request as u\n'
        "try: u.urlopen('http://0254.0021.0.1/')\nexcept e.HTTPError as x: print(x.read().decode())\"",
        f"curl -sS --noproxy '*' https://web.example.test/; echo exit=$?; "
        f"curl -sS --noproxy '*' -m 20 http://{world.address}/; echo exit=$?",
        "python3 dns.py web.example.test; python3 dns.py pypi.org; getent hosts pypi.org; echo exit=$?",
        "apt-config dump Acquire; git config --get http.proxy; echo $PIP_PROXY $npm_config_https_proxy $NO_PROXY",
    ]
    api.add(*[tools(call("shell", {"command": command})) for command in commands], message(f"{MARKER} done"))
    transcript = tmp_path / "t.jsonl"
    done = subprocess.run(
        _nanocode(world, project, "-p", "g", "--transcript", str(transcript)),
        env=_env(tmp_path, api, SSL_CERT_FILE=str(world.ca)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    results = _results(api)
    assert results[0] == "hello from outside\nhello from outside\n"
    assert results[1] == "tiny-0.1-py3-none-any.whl\n"
    assert results[2] == "cloned through the proxy\n"
    refused = results[3]
    assert "refused by rule not-allowed: denied.example.test is not on the allowlist" in refused
    assert "exit=56" in refused and "CONNECT tunnel failed, response 403" in refused
    assert "refused by rule port: web.example.test is allowed on port 80, 443 only" in results[4]
    assert "refused by rule ip-address: 10.255.255.1 is an IP address (a private (RFC 1918) address)" in results[5]
    assert "refused by rule ip-address: 0254.0021.0.1: an IPv4 address written other than" in results[5]
    # Past the proxy: no name resolves, no address has a route.
    noproxy = results[6]
    assert noproxy.startswith("exit=6\nexit=7\n"), noproxy
    assert "Could not resolve host: web.example.test" in noproxy and "Failed to connect" in noproxy
    dns = results[7].splitlines()
    assert all(line.startswith("no answer") or line.endswith("answers 0") for line in dns[:2]), dns
    assert dns[2] == "exit=2"  # getent: not found

    url = "http://nanocode-egress:3128"
    assert f'Acquire::http::Proxy "{url}";' in results[8] and f'Acquire::https::Proxy "{url}";' in results[8]
    assert results[8].endswith(f"{url}\n{url} {url} localhost,127.0.0.1\n")
    system = text(api.requests[0]["messages"][0])
    assert "reaches only these hosts: web.example.test, pkgs.example.test, *.code.example.test" in system
    entries = [json.loads(line) for line in transcript.read_text().splitlines()]
    network = [e for e in entries if e["kind"] == "network"]
    allowed = {(e["host"], e["method"]) for e in network if e["allowed"]}
    assert {("web.example.test", "CONNECT"), ("web.example.test", "GET"), ("pkgs.example.test", "CONNECT")} <= allowed
    assert ("git.code.example.test", "CONNECT") in allowed
    assert all(e["received"] > 0 and e["rule"] in ALLOWED for e in network if e["allowed"])
    refusals = {(e["host"], e["rule"]) for e in network if not e["allowed"]}
    assert refusals == {
        ("denied.example.test", "not-allowed"),
        ("web.example.test", "port"),
        ("10.255.255.1", "ip-address"),
        ("0254.0021.0.1", "ip-address"),
    }
    assert all(e["address"] == world.address for e in network if e["allowed"])  # the address it checked
    summary = [e["summary"] for e in entries if e["kind"] == "network_summary"]
    hosts = ", ".join(sorted(["denied.example.test", "web.example.test", "10.255.255.1", "0254.0021.0.1"]))
    assert len(summary) == 1 and summary[0].endswith(f"connections to 3 hosts allowed, 5 refused: {hosts}")
    assert summary[0] in done.stderr
    assert _ours(docker_engine, "project", str(project)) == ([], [])


def test_npm_installs_from_an_allowed_registry_and_is_refused_another(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    npm = "npm install tiny --no-audit --no-fund"
    commands = [
        f"{npm} --registry https://pkgs.example.test/npm/ >/dev/null && node -p 'require(\"tiny\")' && ls ~/.npm",
        f"mkdir /tmp/b && cd /tmp/b && npm_config_registry=https://denied.example.test/npm/ {npm}; echo exit=$?",
    ]
    api.add(*[tools(call("shell", {"command": command})) for command in commands], message(f"{MARKER} done"))
    transcript = tmp_path / "t.jsonl"
    done = subprocess.run(
        _nanocode(world, project, "-p", "g", "--transcript", str(transcript)),
        env=_env(tmp_path, api, SSL_CERT_FILE=str(world.ca)),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    installed, refused = _results(api)
    assert installed.startswith("42\n") and "_cacache" in installed  # npm's cache: in HOME, on its tmpfs
    assert json.loads((project / "node_modules" / "tiny" / "package.json").read_text())["version"] == "1.0.0"
    assert json.loads((project / "package.json").read_text())["dependencies"] == {"tiny": "^1.0.0"}
    # That server answers this path: the 403 is the proxy's.
    assert "npm ERR! 403 403 Forbidden - GET https://denied.example.test/npm/tiny" in refused
    assert refused.startswith("exit=1\n")
    network = [json.loads(line) for line in transcript.read_text().splitlines()]
    network = [e for e in network if e["kind"] == "network"]
    assert {(e["host"], e["method"]) for e in network if e["allowed"]} == {("pkgs.example.test", "CONNECT")}
    assert {(e["host"], e["rule"]) for e in network if not e["allowed"]} == {("denied.example.test", "not-allowed")}


# Asks for each URL given through the proxy (urllib sends the host as written): the status and the body.
FETCH = r"""
import sys, urllib.error as e, urllib.request as u
for url in sys.argv[1:]:
    try:
        print(u.urlopen(url, timeout=20).status)
    except e.HTTPError as x:
        print(x.code, x.read().decode().strip())
"""


def test_with_star_no_spelling_of_the_hosts_address_and_no_name_of_a_private_one_gets_through(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    """`*` is any public host: the host's address on the engine's network, in every spelling
    inet_aton reads, and a name that resolves to a private address, are refused; nothing reaches
    a listener of the host's."""
    gateway = docker_engine.api.inspect_network(world.network)["IPAM"]["Config"][0]["Gateway"]
    parts = [int(p) for p in gateway.split(".")]
    spellings = [
        gateway,
        f"{parts[0]}.{parts[1]}.{parts[2] * 256 + parts[3]}",
        ".".join(f"0{p:o}" for p in parts),
        str(int(ipaddress.ip_address(gateway))),
        ".".join(hex(p) for p in parts),
    ]
    (project / "fetch.py").write_text(FETCH)
    with socket.create_server(("0.0.0.0", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        urls = [f"http://{host}:{port}/" for host in spellings] + ["http://web.example.test/hello.txt"]
        api.add(tools(call("shell", {"command": "python3 fetch.py " + " ".join(urls)})), message(f"{MARKER} done"))
        args = ["--project", str(project), "--network", world.network, "--allow-host", "*"]
        done = subprocess.run(
            [sys.executable, "-m", "nanocode", "--sandbox", "-p", "g", *args],
            env=_env(tmp_path, api),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing came
    lines = _results(api)[0].splitlines()
    assert len(lines) == len(urls), lines
    for host, line in zip(spellings, lines, strict=False):
        assert line.startswith(f"403 nanocode egress: GET {host}:{port} refused by rule ip-address"), line
    assert lines[-1].startswith("403 nanocode egress: GET web.example.test:80 refused by rule address"), lines[-1]
    assert "a private (RFC 1918) address" in lines[-1] or "engine's network" in lines[-1], lines[-1]
    assert "0 connections to 0 hosts allowed, 6 refused" in done.stderr, done.stderr


# Each command prints how long it took, last.
TIMED = "start=$(date +%s%N); ( {command} ) 2>&1; echo took $(( ($(date +%s%N) - start) / 1000000 ))"
CLONE = "git clone -q https://github.com/nanocode/tiny.git /tmp/tiny && git -C /tmp/tiny log --format=%s"


def test_the_github_preset_clones_over_smart_https_and_without_the_hosts_ca_fails_in_seconds(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    """@github's names, with git's smart HTTP, where github.com is the test's server (an alias on the
    proxy's way out, a private address: allowed by an address rule) and the host's CA is the test's."""
    commands = [CLONE, "curl -sS https://gist.github.com/ -o /dev/null; echo exit=$?"]
    for extra in ([], ["--no-host-ca"]):
        api.add(*[tools(call("shell", {"command": TIMED.format(command=c)})) for c in commands])
        api.add(message(f"{MARKER} done"))
        transcript = tmp_path / f"t{len(extra)}.jsonl"
        rules = ["--allow-host", "@github", "--allow-host", world.subnet]
        args = ["--project", str(project), "--network", world.network, *rules, "--transcript", str(transcript)]
        done = subprocess.run(
            [sys.executable, "-m", "nanocode", "--sandbox", "-p", "g", *args, *extra],
            env=_env(tmp_path, api, SSL_CERT_FILE=str(world.ca)),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        (clone, clone_ms), (gist, _) = [r.rpartition("took ")[::2] for r in _results(api)]
        network = [json.loads(line) for line in transcript.read_text().splitlines()]
        network = [e for e in network if e["kind"] == "network"]
        assert {(e["host"], e["rule"]) for e in network if not e["allowed"]} == {("gist.github.com", "not-allowed")}
        assert "refused by rule not-allowed: gist.github.com" in gist or "response 403" in gist, gist
        if not extra:
            assert clone == "first\n", clone
            assert {(e["host"], e["rule"], e["address"]) for e in network if e["allowed"]} == {
                ("github.com", "github.com", world.address)
            }
        else:
            assert "server certificate verification failed" in clone, clone
            assert int(clone_ms) < 10000, clone_ms
            print("git clone without the host CA failed in", int(clone_ms), "ms")
    system = text(api.requests[0]["messages"][0])
    assert "github.com, api.github.com, codeload.github.com" in system


def _start_sleeping_goal(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path, **extra: str
) -> subprocess.Popen[str]:
    """A nanocode on an allowlist whose goal is inside a long command in its sandbox."""
    api.add(tools(call("shell", {"command": "sleep 300"})))
    process = subprocess.Popen(
        _nanocode(world, project, "-p", "g"),
        env=_env(tmp_path, api, SSL_CERT_FILE=str(world.ca), **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (len(api.requests) == 1 and len(_ours(docker_engine, "owner.pid", str(process.pid))[0]) == 2):
        assert time.monotonic() < deadline and process.poll() is None, "the goal did not start"
        time.sleep(0.1)
    time.sleep(0.5)
    return process


def test_ctrl_c_removes_both_containers_and_the_network(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    process = _start_sleeping_goal(docker_engine, world, api, project, tmp_path)
    containers, networks = _ours(docker_engine, "owner.pid", str(process.pid))
    assert len(containers) == 2 and any(name.startswith("/nanocode-proxy-") for name in containers)
    assert len(networks) == 1
    net = docker_engine.api.inspect_network(networks[0])
    assert net["Internal"] is True and net["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    for name in containers:
        info = docker_engine.api.inspect_container(name)
        host, attached = info["HostConfig"], set(info["NetworkSettings"]["Networks"])
        assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
        assert {"no-new-privileges=true", "no-new-privileges"} & set(host["SecurityOpt"])
        assert host["Memory"] and host["PidsLimit"]
        if name.startswith("/nanocode-proxy-"):
            assert info["Config"]["User"] == "65534:65534" and host["NanoCpus"] == 10**9
            assert attached == {networks[0], world.network}
        else:
            assert attached == {networks[0]}  # the sandbox: on the goal's network alone
    try:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "network: no connections" in stderr
    assert _ours(docker_engine, "owner.pid", str(process.pid)) == ([], [])


def test_kill_9_leaves_what_the_next_start_removes(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    # A user of this test's own (the owner label): on a shared engine, other nanocodes' starts prune
    # only their own user's dead goals, so this goal is left for the start below alone.
    user = {"USER": f"nanocode-test-{uuid.uuid4().hex[:8]}"}
    user["LOGNAME"] = user["USER"]
    process = _start_sleeping_goal(docker_engine, world, api, project, tmp_path, **user)
    process.kill()
    process.communicate()
    containers, networks = _ours(docker_engine, "owner.pid", str(process.pid))
    assert len(containers) == 2 and len(networks) == 1
    hosts = os.path.join(tempfile.gettempdir(), f"nanocode-hosts-{networks[0].rsplit('-', 1)[1]}-*")
    assert len(glob.glob(hosts)) == 1  # the sandbox's /etc/hosts
    # The lease: with their owner gone, the sandbox and its proxy stop by themselves, no start needed.
    owned = {"label": f"nanocode.owner.pid={process.pid}"}
    deadline = time.monotonic() + 15
    while {c["State"] for c in docker_engine.api.containers(all=True, filters=owned)} - {"exited"}:
        assert time.monotonic() < deadline, "the killed goal's containers still run"
        time.sleep(0.2)
    api.add(message(f"{MARKER} next goal"))
    assert {c["Labels"]["nanocode.owner.user"] for c in docker_engine.api.containers(all=True, filters=owned)} == {
        user["USER"]
    }
    done = subprocess.run(
        [sys.executable, "-m", "nanocode", "--sandbox", "-p", "next", "--project", str(project)],
        env=_env(tmp_path, api, **user),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in [*containers, *networks]:
        kind = "network" if name in networks else "sandbox container"
        assert f"removed stale {kind} {name.lstrip('/')}" in done.stderr, done.stderr
    assert not glob.glob(hosts)
    assert _ours(docker_engine, "owner.pid", str(process.pid)) == ([], [])


# Through the real network of this machine, whose outbound HTTPS may pass a TLS-inspecting proxy
# that only the host's trust store knows.


def test_pip_through_the_allowlist_with_the_hosts_trust_store(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    api.add(
        tools(call("shell", {"command": "pip download six --no-deps -q -d /tmp/dl && ls /tmp/dl"})),
        message(f"{MARKER} done"),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanocode",
            "--sandbox",
            "-p",
            "g",
            "--project",
            str(project),
            "--allow-host",
            "@python",
            "--network",
            world.network,
        ],
        env=_env(tmp_path, api),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert _results(api)[0].startswith("six-") and _results(api)[0].endswith(".whl\n"), _results(api)[0]
    assert "hosts allowed, none refused" in done.stderr


def test_a_sandbox_with_a_network_trusts_what_the_host_trusts(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    show = "echo $SSL_CERT_FILE $PIP_CERT $GIT_SSL_CAINFO; cmp /etc/nanocode/ca-certificates.crt {bundle} && echo same"
    from nanocode.egress import trust

    bundle = trust.host_bundle()
    assert bundle is not None
    (project / "bundle.crt").write_bytes(Path(bundle).read_bytes())
    api.add(
        tools(call("shell", {"command": show.format(bundle="bundle.crt")})),
        tools(call("shell", {"command": "pip download six --no-deps -q -d /tmp/dl && ls /tmp/dl"})),
        message(f"{MARKER} done"),
        tools(call("shell", {"command": "echo ${SSL_CERT_FILE:-unset}; ls /etc/nanocode"})),
        message(f"{MARKER} done"),
    )
    for extra in ([], ["--no-host-ca"]):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanocode",
                "--sandbox",
                "-p",
                "g",
                "--project",
                str(project),
                "--network",
                world.network,
                *extra,
            ],
            env=_env(tmp_path, api),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
    with_ca = [text(m) for m in api.requests[2]["messages"] if m["role"] == "tool"]
    inside = "/etc/nanocode/ca-certificates.crt"
    assert with_ca[0] == f"{inside} {inside} {inside}\nsame\n"
    assert with_ca[1].startswith("six-"), with_ca[1]
    without = _results(api)[0]
    assert without.endswith("\nunset") and "cannot access '/etc/nanocode'" in without


def test_an_interrupt_while_the_network_and_the_proxy_start_leaves_nothing(
    docker_engine: Any, world: World, api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    temporary = tmp_path / "tmp"  # the goals' hosts files: of these goals alone, on a shared machine
    temporary.mkdir()
    for delay in (0.4, 0.6, 0.8, 1.0, 1.2):
        api.add(message(f"{MARKER} quick"))
        process = subprocess.Popen(
            _nanocode(world, project, "-p", "g"),
            env=_env(tmp_path, api, SSL_CERT_FILE=str(world.ca), TMPDIR=str(temporary)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr
        assert _ours(docker_engine, "owner.pid", str(process.pid)) == ([], []), f"left after an interrupt at {delay}s"
    assert not list(temporary.glob("nanocode-hosts-*"))
