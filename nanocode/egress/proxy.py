"""The egress proxy: the only way out of a sandbox on an allowlist.

It runs as the main process of a container of its own, attached to the goal's internal
network (where the sandbox is) and to the outside. It speaks HTTP CONNECT (TLS passes through
untouched: nothing is intercepted) and plain HTTP in absolute form, lets through the hosts the
rules allow and answers every other with a 403 that names the rule that refused it. It resolves
names itself, so the sandbox needs no DNS. Each connection, allowed or refused, is told as a JSON
line on stdout; the end of stdin (nanocode gone) ends it.

The invariants, each tested with generated cases:
- A connection goes only to an address this proxy checked: a name is resolved once, and the
  socket connects to those addresses, never to the name. An address is reached only if it is
  outside the refused blocks (loopback, private, CGNAT, link-local, multicast, unspecified, the
  engine's networks, and IPv6 forms carrying such an IPv4 address), or an address rule covers it.
- A host is a name or an address by what it is, not by how it is spelled: anything inet_aton
  would read as an IPv4 address but that is not four decimal parts is refused, as rule and as host.
- Every connection accepted is told exactly once, whatever ends it (refusal, parse error,
  timeout, no thread to be had, a fault of its handler).

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
        if rest and not rest.startswith(":"):
            raise ValueError("not a host and port: %r" % text)
        port = rest[1:]
        colon = rest.startswith(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
        colon = True
    else:
        host, port, colon = text, "", False
    if colon and not port:
        raise ValueError("a port is missing after ':'")
    if not port:
        return host.lower().rstrip("."), default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not a port: %r" % port)
    return host.lower().rstrip("."), int(port)


# A name as DNS writes it: labels of letters, digits, '-' and '_', at most 63 each, 253 in all.
LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def name_problem(name):
    """Why `name` (lower case, no trailing dot) is not a host name, or None if it is one."""
    if not name or len(name) > 253:
        return "not a host name (empty or longer than 253 characters)"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "not a host name (an empty label)"
        if len(label) > 63:
            return "not a host name (a label longer than 63 characters)"
        if not set(label) <= LABEL_CHARACTERS or label.startswith("-") or label.endswith("-"):
            return "not a host name (%r)" % label[:64]
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])):
        # 172.17.1, 2886795265, 0254.0021.0.1, 0xac.0x11.0x0.0x1: what inet_aton would take for an address.
        return "an IPv4 address written other than as four decimal parts"
    return None


# The addresses refused unless a rule names them: the machine itself, the local networks and the
# ones no host should be reached at. Other addresses pass, reserved and documentation blocks
# included (a network's own proxy may answer there).
REFUSED_BLOCKS = [
    (ipaddress.ip_network(block), kind)
    for block, kind in (
        ("0.0.0.0/8", "an unspecified"),
        ("127.0.0.0/8", "a loopback"),
        ("10.0.0.0/8", "a private (RFC 1918)"),
        ("172.16.0.0/12", "a private (RFC 1918)"),
        ("192.168.0.0/16", "a private (RFC 1918)"),
        ("100.64.0.0/10", "a shared (CGNAT, 100.64.0.0/10)"),
        ("169.254.169.254/32", "the cloud metadata"),
        ("169.254.0.0/16", "a link-local"),
        ("224.0.0.0/4", "a multicast"),
        ("255.255.255.255/32", "the broadcast"),
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("fc00::/7", "a private (unique local)"),
        ("fe80::/10", "a link-local"),
        ("ff00::/8", "a multicast"),
    )
]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded(address):
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), or None."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.ip_address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address, engine_networks=()):
    """Why an address is refused by default (loopback, private, ...), or None where it is not."""
    inner = embedded(address)
    if inner is not None:
        refusal = address_refusal(inner, engine_networks)
        if refusal:
            return refusal + " (inside %s)" % address
    for network in engine_networks:
        if address.version == network.version and address in network:
            return "an address of the engine's network %s" % network
    for block, kind in REFUSED_BLOCKS:
        if address.version == block.version and address in block:
            return "%s address" % kind
    return None


class Rule:
    """One allowed host: an exact name, `*.example.org` (its subdomains), `*` (any name whose
    addresses are public), an IP address or a CIDR block (those addresses, private ones too);
    on ports 80 and 443 unless one is given."""

    def __init__(self, text: str) -> None:
        raw = text.strip()
        bare = (
            raw[1:].partition("]")[0] if raw.startswith("[") else raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw
        )
        if bare.startswith(".") or bare.endswith("*.") or bare.endswith(".."):
            raise ValueError("not a host name or address")
        host, port = split_host_port(raw)
        self.text = raw
        self.ports = (port,) if port else DEFAULT_PORTS
        self.network = _network(host)
        self.host = host
        if self.network is not None:
            return
        if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[2:]):
            raise ValueError("a wildcard goes only at the start, as in *.example.org")
        problem = None if host == "*" else name_problem(host[2:] if host.startswith("*.") else host)
        if problem:
            raise ValueError(problem)

    def matches_host(self, host):
        """Whether this rule allows a name (address rules never do)."""
        if self.network is not None:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def covers(self, address, port):
        return self.network is not None and address in self.network and port in self.ports


def _network(host):
    """The addresses an IP or CIDR rule names, or None for a name."""
    try:
        if "/" in host:
            return ipaddress.ip_network(host, strict=False)
        return ipaddress.ip_network(ipaddress.ip_address(host))
    except ValueError:
        if "/" in host:
            raise ValueError("not an address block such as 10.0.0.0/8") from None
        return None


def decide(rules, host, port):
    """The name rule that allows host:port; raises Refused with what refuses it. An address is
    checked by check_address; a name's addresses, once resolved, by allowed_addresses."""
    host = host.lower().rstrip(".").strip("[]")
    if is_ip(host):
        return check_address(rules, ipaddress.ip_address(host), port)
    problem = name_problem(host)
    if problem:
        rule = "ip-address" if problem.startswith("an IPv4") else "bad-name"
        raise Refused(rule, "%s: %s" % (host[:80], problem))
    matched = [rule for rule in rules if rule.matches_host(host)]
    for rule in matched:
        if port in rule.ports:
            return rule.text
    if matched:
        ports = ", ".join(str(p) for p in matched[0].ports)
        raise Refused(
            "port", "%s is allowed on port %s only (rule %s), not on %d" % (host, ports, matched[0].text, port)
        )
    allowed = ", ".join(rule.text for rule in rules) or "nothing"
    raise Refused("not-allowed", "%s is not on the allowlist (allowed: %s)" % (host, allowed))


def check_address(rules, address, port):
    """The address rule that allows a connection to this address, or Refused."""
    for rule in rules:
        if rule.covers(address, port):
            return rule.text
    kind = address_refusal(address)
    detail = " (%s)" % kind if kind else ""
    raise Refused(
        "ip-address", "%s is an IP address%s; addresses are refused unless a rule names them" % (address, detail)
    )


def allowed_addresses(rules, host, port, found, engine_networks=()):
    """Of the addresses a name resolved to, those it may be reached at: public ones, and any an
    address rule covers. Raises Refused when none is left."""
    allowed, refusals = [], []
    for address in found:
        if any(rule.covers(address, port) for rule in rules):
            allowed.append(address)
            continue
        refusal = address_refusal(address, engine_networks)
        if refusal is None:
            allowed.append(address)
        else:
            refusals.append("%s, %s" % (address, refusal))
    if allowed:
        return allowed
    raise Refused(
        "address",
        "%s resolves to %s; such addresses are refused unless an address rule (an IP or a CIDR) covers them"
        % (host, "; ".join(refusals) or "nothing"),
    )


def resolve(host, port):
    """The addresses of a name, resolved once: the ones checked are the ones connected to."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise Upstream("cannot resolve %s" % host) from None
    found = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address not in found:
            found.append(address)
    return found


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
    except (socket.gaierror, UnicodeError):
        raise Upstream("cannot resolve %s" % host) from None
    except OSError as exc:
        raise Upstream("cannot reach %s:%d: %s" % (host, port, exc.strerror or exc)) from None
    sock.settimeout(None)
    return sock


def connect_to(addresses, host, port, record):
    """A connection to the first of the checked addresses that answers."""
    problem = "no address"
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((str(address), port))
        except OSError as exc:
            sock.close()
            problem = "%s: %s" % (address, exc.strerror or exc)
            continue
        sock.settimeout(None)
        record["address"] = str(address)
        return sock
    raise Upstream("cannot reach %s:%d (%s)" % (host, port, problem))


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
        # Refused as well, unless an address rule names them: the engine's own networks.
        self.engine_networks = [ipaddress.ip_network(n, strict=False) for n in settings.get("refuse", [])]
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
        line = json.dumps(event, ensure_ascii=True).encode() + b"\n"
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
        """Serves one connection; whatever ends it, it is told as exactly one record."""
        started = time.time()
        clock = time.monotonic()
        record = {"host": "", "port": 0, "method": "", "allowed": False, "rule": "", "sent": 0, "received": 0}
        server = None
        try:
            server = self.open(client, record)
            relay(client, server, record)
        except Refused as exc:
            record["allowed"], record["rule"] = False, exc.rule
            reply(
                client, 403, "Forbidden", "nanocode egress: %s refused by rule %s: %s" % (where(record), exc.rule, exc)
            )
        except BadRequest as exc:
            record["rule"], record["error"] = "bad-request", str(exc)
            reply(client, 400, "Bad Request", "nanocode egress: %s" % exc)
        except Upstream as exc:
            record["error"] = str(exc)
            reply(client, 502, "Bad Gateway", "nanocode egress: %s" % exc)
        except OSError as exc:
            record["error"] = str(exc) or type(exc).__name__
        except Exception as exc:  # a fault of this proxy's: the connection still gets its answer and record
            record["error"] = "internal error: %s: %s" % (type(exc).__name__, exc)
            reply(client, 500, "Internal Server Error", "nanocode egress: %s" % record["error"])
        finally:
            for sock in (client, server):
                if sock is not None:
                    sock.close()
            self.told_end(record, number, started, clock)

    def told_end(self, record, number, started, clock):
        record["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        record["seconds"] = round(time.monotonic() - clock, 4)
        self.tell({"connection": record, "number": number})

    def open(self, client, record):
        """Reads the request, checks it against the rules and the address policy, and connects
        to the address it checked."""
        client.settimeout(HEAD_TIMEOUT)  # a client that never finishes its request holds a thread
        data, rest = read_head(client)
        client.settimeout(None)
        head = Head(data)
        record["method"] = head.method[:32]
        if head.method.upper() == "CONNECT":
            try:
                host, port = split_host_port(head.target, 443)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        else:
            host, port, path = parse_url(head.target)
        record["host"], record["port"] = host.strip("[]")[:300], port or 0
        if port is None:
            raise BadRequest("CONNECT needs a port")
        record["rule"] = decide(self.rules, host, port)
        addresses = self.addresses(host, port)
        record["allowed"] = True
        if head.method.upper() == "CONNECT":
            server, early = self.tunnel(host, port, addresses, record)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if early:
                client.sendall(early)
            first = rest
        else:
            server, first = self.plain(head, host, port, path, addresses, record)
            first += rest
        if first:
            server.sendall(first)
            record["sent"] += len(first)
        return server

    def addresses(self, host, port):
        """Where host:port may be reached: an address as given, or a name's addresses as checked
        (resolved here once, and connected to as checked). Where the host's proxy goes out, it
        resolves the name again; a name this proxy cannot resolve is left to it."""
        bare = host.strip("[]")
        if is_ip(bare):
            return [ipaddress.ip_address(bare)]
        via_host = any(p.serves(bare) for p in self.host_proxies.values())
        try:
            found = resolve(bare, port)
        except Upstream:
            if via_host:
                return []
            raise
        return allowed_addresses(self.rules, bare, port, found, self.engine_networks)

    def tunnel(self, host, port, addresses, record):
        host_proxy = self.host_proxies.get("https")
        if host_proxy is not None and host_proxy.serves(host):
            return host_proxy.tunnel(host, port)
        return connect_to(addresses, host, port, record), b""

    def plain(self, head, host, port, path, addresses, record):
        host_proxy = self.host_proxies.get("http")
        if host_proxy is not None and host_proxy.serves(host):
            return connect(host_proxy.host, host_proxy.port), head.absolute_form(host_proxy.auth)
        return connect_to(addresses, host, port, record), head.origin_form(path)

    def serve(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # out of descriptors: the waiting connections are taken once some end
                time.sleep(0.05)
                continue
            with self.lock:
                self.opened += 1
                number = self.opened
                self.active.add(number)
            # Told before anything else of it, so that nanocode waits for its record at the end.
            self.tell({"open": number})
            try:
                threading.Thread(target=self.handle, args=(client, number), daemon=True).start()
            except RuntimeError:  # no thread to be had under the process limit
                self.too_many(client, number)

    def too_many(self, client, number):
        started, clock = time.time(), time.monotonic()
        reply(client, 503, "Service Unavailable", "nanocode egress: too many connections at once")
        client.close()
        record = {"host": "", "port": 0, "method": "", "allowed": False, "rule": "too-many", "sent": 0, "received": 0}
        record["error"] = "too many connections at once"
        try:
            self.told_end(record, number, started, clock)
        finally:
            with self.lock:
                self.active.discard(number)
                self.idle.notify_all()

    def drain(self, seconds):
        """Waits a little for the connections still open to end and be told."""
        deadline = time.monotonic() + seconds
        with self.lock:
            while self.active and time.monotonic() < deadline:
                self.idle.wait(deadline - time.monotonic())


def where(record):
    return "%s %s:%s" % (record["method"] or "request", record["host"] or "?", record["port"] or "?")


def wait_for_owner(lease):
    """Until the owner is gone: its stdin ends, or (with a lease) nothing came on it, not even the
    newline its heartbeat says every few seconds, for `lease` seconds (a machine gone or a network
    cut closes nothing). The goal's sandbox goes the same way (its runtime holds the same lease)."""
    while select.select([0], [], [], lease or None)[0]:
        if not os.read(0, CHUNK):
            return


def main():
    settings = json.loads(sys.stdin.buffer.readline())
    proxy = Proxy(settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.get("bind", "0.0.0.0"), settings.get("port", PORT)))
    listener.listen(128)
    threading.Thread(target=proxy.serve, args=(listener,), daemon=True).start()
    proxy.tell({"ready": True, "pid": os.getpid(), "port": listener.getsockname()[1]})
    wait_for_owner(float(settings.get("lease") or 0))
    proxy.drain(2.0)
    os._exit(0)


if __name__ == "__main__":
    main()
