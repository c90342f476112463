"""The egress proxy: the only way out of a sandbox on an allowlist.

It runs as the main process of a container of its own, attached to the goal's internal
network (where the sandbox is) and to the outside. It speaks HTTP CONNECT (TLS passes through
untouched: nothing is intercepted) and plain HTTP in absolute form, lets through the hosts the
rules allow and answers every other with a 403 that names the rule that refused it. It resolves
names itself, so the sandbox needs no DNS. Each connection, allowed or refused, is told as a JSON
line on stdout; the end of stdin (nanocode gone) ends it.

Like the runtime, it runs on any python3 >= 3.8 with the standard library only: it is sent as the
first line of its input, and its settings as the second.
"""

import base64
import ipaddress
import json
import os
import select
import socket
import sys
import threading
import time

PORT = 3128
DEFAULT_PORTS = (80, 443)
HEAD_LIMIT = 65536
HEAD_TIMEOUT = 60.0
CONNECT_TIMEOUT = 15.0
CHUNK = 65536
# Headers that concern the hop to this proxy, never the origin.
HOP_HEADERS = ("proxy-connection", "proxy-authorization", "connection", "keep-alive")


class Refused(Exception):
    """A request the rules do not allow: `rule` names what refused it, the message says why."""

    def __init__(self, rule, message):
        Exception.__init__(self, message)
        self.rule = rule


class BadRequest(Exception):
    pass


class Upstream(Exception):
    """The way out failed: the host cannot be reached, or the host's proxy refused."""


def is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def split_host_port(text, default=None):
    """'host', 'host:443', '[::1]:8080' -> (host, port or default)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not port:
        return host.lower().rstrip("."), default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not a port: %r" % port)
    return host.lower().rstrip("."), int(port)


class Rule:
    """One allowed host: an exact name or address, `*.example.org` (its subdomains), or `*`
    (any name, never an address); on ports 80 and 443 unless one is given."""

    def __init__(self, text: str) -> None:
        host, port = split_host_port(text)
        if not host or " " in host or "/" in host:
            raise ValueError("not a host name or address")
        if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[2:]):
            raise ValueError("a wildcard goes only at the start, as in *.example.org")
        self.text = text.strip()
        self.host = host
        self.ports = (port,) if port else DEFAULT_PORTS

    def matches_host(self, host):
        if self.host == "*":
            return not is_ip(host)
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and not is_ip(host)
        return host == self.host


def decide(rules, host, port):
    """The rule that allows host:port; raises Refused with the one that refuses it."""
    host = host.lower().rstrip(".").strip("[]")
    matched = [rule for rule in rules if rule.matches_host(host)]
    for rule in matched:
        if port in rule.ports:
            return rule.text
    if matched:
        ports = ", ".join(str(p) for p in matched[0].ports)
        raise Refused(
            "port", "%s is allowed on port %s only (rule %s), not on %d" % (host, ports, matched[0].text, port)
        )
    if is_ip(host):
        raise Refused("ip-address", "%s is an IP address; addresses are refused unless allowed by address" % host)
    allowed = ", ".join(rule.text for rule in rules) or "nothing"
    raise Refused("not-allowed", "%s is not on the allowlist (allowed: %s)" % (host, allowed))


class Head:
    """A request's first line and headers, as the client sent them."""

    def __init__(self, data):
        try:
            text = data.decode("iso-8859-1")
            first, _, rest = text.partition("\r\n")
            self.method, self.target, self.version = first.split(" ")
        except ValueError:
            raise BadRequest("not an HTTP request") from None
        self.headers = [line.split(":", 1) for line in rest.split("\r\n") if ":" in line]

    def origin_form(self, path):
        """The request to send the origin: its path only, one request per connection."""
        lines = ["%s %s %s" % (self.method, path, self.version)]
        lines += ["%s:%s" % (name, value) for name, value in self.headers if name.strip().lower() not in HOP_HEADERS]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")

    def absolute_form(self, upstream_auth):
        """The request to send the host's proxy: the full URL kept, its credentials added."""
        lines = ["%s %s %s" % (self.method, self.target, self.version)]
        lines += ["%s:%s" % (name, value) for name, value in self.headers if name.strip().lower() not in HOP_HEADERS]
        lines.append("Connection: close")
        if upstream_auth:
            lines.append("Proxy-Authorization: Basic %s" % upstream_auth)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


def parse_url(target):
    """http://host[:port]/path -> (host, port, path)."""
    if not target.lower().startswith("http://"):
        raise BadRequest("send requests to this proxy as http://host/path, or CONNECT host:port for TLS")
    rest = target[len("http://") :]
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    try:
        host, port = split_host_port(authority, 80)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return host, port, slash + path or "/"


def read_head(sock):
    """The request head, and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(CHUNK)
        if not chunk:
            raise BadRequest("the connection closed before a request")
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise BadRequest("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class HostProxy:
    """The host's own HTTP proxy, where its proxy variables name one: this proxy goes out through it."""

    def __init__(self, url: str, no_proxy: "list[str]") -> None:
        scheme, _, rest = url.partition("://")
        if not rest:
            scheme, rest = "http", url
        if scheme.lower() != "http":
            raise ValueError("only http:// proxies are supported, not %s://" % scheme)
        authority = rest.split("/", 1)[0]
        credentials, _, address = authority.rpartition("@")
        self.host, self.port = split_host_port(address, 80)
        self.auth = base64.b64encode(credentials.encode()).decode() if credentials else None
        self.no_proxy = [entry.strip().lower().lstrip("*") for entry in no_proxy if entry.strip()]

    def serves(self, host):
        for entry in self.no_proxy:
            if entry == "*" or host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
                return False
            if not entry.startswith(".") and host.endswith("." + entry):
                return False
        return True

    def tunnel(self, host, port):
        sock = connect(self.host, self.port)
        request = "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n" % (host, port, host, port)
        if self.auth:
            request += "Proxy-Authorization: Basic %s\r\n" % self.auth
        try:
            sock.sendall((request + "\r\n").encode("iso-8859-1"))
            head, rest = read_head(sock)
        except (OSError, BadRequest) as exc:
            sock.close()
            raise Upstream("the host's proxy %s:%d failed: %s" % (self.host, self.port, exc)) from None
        status = head.split(b"\r\n", 1)[0].decode("iso-8859-1")
        if status.split(" ")[1:2] != ["200"]:
            sock.close()
            raise Upstream("the host's proxy %s:%d answered %s" % (self.host, self.port, status))
        return sock, rest


def connect(host, port):
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except socket.gaierror:
        raise Upstream("cannot resolve %s" % host) from None
    except OSError as exc:
        raise Upstream("cannot reach %s:%d: %s" % (host, port, exc.strerror or exc)) from None
    sock.settimeout(None)
    return sock


def relay(client, server, record):
    """Copies both ways until both sides are done; counts what went out and what came back."""
    open_ends = {client: server, server: client}
    while open_ends:
        readable = select.select(list(open_ends), [], [])[0]
        for sock in readable:
            try:
                data = sock.recv(CHUNK)
            except OSError:
                data = b""
            other = open_ends[sock]
            if not data:
                del open_ends[sock]
                try:
                    other.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            try:
                other.sendall(data)
            except OSError:
                return
            record["sent" if sock is client else "received"] += len(data)


def reply(sock, status, reason, body):
    data = body.encode("utf-8") + b"\n"
    head = "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(data),
    )
    try:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + data)
    except OSError:
        pass


class Proxy:
    def __init__(self, settings):
        self.rules = [Rule(text) for text in settings.get("allow", [])]
        self.host_proxies = {}
        for scheme in ("http", "https"):
            url = settings.get("host_proxy", {}).get(scheme)
            if url:
                self.host_proxies[scheme] = HostProxy(url, settings.get("no_proxy", []))
        self.lock = threading.Lock()
        self.opened = 0
        self.active = set()
        self.idle = threading.Condition(self.lock)

    def tell(self, event):
        line = json.dumps(event).encode() + b"\n"
        with self.lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()

    def handle(self, client, number):
        try:
            self.connection(client, number)
        finally:
            with self.lock:
                self.active.discard(number)
                self.idle.notify_all()

    def connection(self, client, number):
        started = time.time()
        clock = time.monotonic()
        record = {"host": "", "port": 0, "method": "", "allowed": False, "rule": "", "sent": 0, "received": 0}
        server = None
        try:
            server = self.open(client, record)
            relay(client, server, record)
        except Refused as exc:
            record["rule"] = exc.rule
            reply(
                client, 403, "Forbidden", "nanocode egress: %s refused by rule %s: %s" % (where(record), exc.rule, exc)
            )
        except BadRequest as exc:
            record["rule"] = "bad-request"
            reply(client, 400, "Bad Request", "nanocode egress: %s" % exc)
        except Upstream as exc:
            record["error"] = str(exc)
            reply(client, 502, "Bad Gateway", "nanocode egress: %s" % exc)
        except OSError as exc:
            record["error"] = str(exc)
        finally:
            for sock in (client, server):
                if sock is not None:
                    sock.close()
        record["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        record["seconds"] = round(time.monotonic() - clock, 4)
        self.tell({"connection": record, "number": number})

    def open(self, client, record):
        """Reads the request, checks it against the rules, and connects where it goes."""
        client.settimeout(HEAD_TIMEOUT)  # a client that never finishes its request holds a thread
        data, rest = read_head(client)
        client.settimeout(None)
        head = Head(data)
        record["method"] = head.method
        if head.method.upper() == "CONNECT":
            try:
                host, port = split_host_port(head.target, 443)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        else:
            host, port, path = parse_url(head.target)
        record["host"], record["port"] = host, port
        if port is None:
            raise BadRequest("CONNECT needs a port")
        record["rule"] = decide(self.rules, host, port)
        record["allowed"] = True
        if head.method.upper() == "CONNECT":
            server, early = self.tunnel(host, port)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if early:
                client.sendall(early)
            first = rest
        else:
            server, first = self.plain(head, host, port, path)
            first += rest
        if first:
            server.sendall(first)
            record["sent"] += len(first)
        return server

    def tunnel(self, host, port):
        host_proxy = self.host_proxies.get("https")
        if host_proxy is not None and host_proxy.serves(host):
            return host_proxy.tunnel(host, port)
        return connect(host, port), b""

    def plain(self, head, host, port, path):
        host_proxy = self.host_proxies.get("http")
        if host_proxy is not None and host_proxy.serves(host):
            return connect(host_proxy.host, host_proxy.port), head.absolute_form(host_proxy.auth)
        return connect(host, port), head.origin_form(path)

    def serve(self, listener):
        while True:
            client, _ = listener.accept()
            with self.lock:
                self.opened += 1
                number = self.opened
                self.active.add(number)
            # Told before anything else of it, so that nanocode waits for its record at the end.
            self.tell({"open": number})
            try:
                threading.Thread(target=self.handle, args=(client, number), daemon=True).start()
            except RuntimeError:  # no thread to be had under the process limit
                reply(client, 503, "Service Unavailable", "nanocode egress: too many connections at once")
                client.close()
                with self.lock:
                    self.active.discard(number)

    def drain(self, seconds):
        """Waits a little for the connections still open to end and be told."""
        deadline = time.monotonic() + seconds
        with self.lock:
            while self.active and time.monotonic() < deadline:
                self.idle.wait(deadline - time.monotonic())


def where(record):
    return "%s %s:%s" % (record["method"] or "request", record["host"] or "?", record["port"] or "?")


def main():
    settings = json.loads(sys.stdin.buffer.readline())
    proxy = Proxy(settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.get("bind", "0.0.0.0"), settings.get("port", PORT)))
    listener.listen(128)
    threading.Thread(target=proxy.serve, args=(listener,), daemon=True).start()
    proxy.tell({"ready": True, "pid": os.getpid(), "port": listener.getsockname()[1]})
    while sys.stdin.buffer.read(CHUNK):
        pass  # nothing more is said; the end of stdin is nanocode gone
    proxy.drain(2.0)
    os._exit(0)


if __name__ == "__main__":
    main()
