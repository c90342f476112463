"""Section 12: the egress allowlist. A 1 MB download through the goal's proxy against the same
download straight from a sandbox on the server's network, and what an allowlist adds to a goal's start."""

import dataclasses
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import OUTPUT_CAP, expect, interleaved, ms, ok_result

from nanocode.egress.goal import AllowlistedSandbox
from nanocode.sandbox import container as lifecycle
from nanocode.sandbox.executor import SandboxExecutor

SECTION = "12. egress allowlist"
HOST = "files.bench.test"
SIZE = 1 << 20
SERVER = (
    "import functools, http.server; "
    "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/srv'); "
    "h.func.log_message = lambda *a: None; "
    "http.server.ThreadingHTTPServer(('0.0.0.0', 80), h).serve_forever()"
)


class Discard:
    def record(self, kind: str, **fields: Any) -> None:
        pass


def section(bench: Any) -> None:
    network = _world(bench)
    config = dataclasses.replace(bench.config, network=network)
    download(bench, config, network)
    startup(bench, config, network)


def _world(bench: Any) -> str:
    """A network of the benchmark's, with a file server on it by name."""
    client = bench.client
    folder = tempfile.mkdtemp(prefix="nanocode-bench-egress-")
    bench.cleanup.push(lambda: shutil.rmtree(folder, ignore_errors=True))
    Path(folder, "1mb.bin").write_bytes(b"x" * SIZE)
    Path(folder).chmod(0o755)
    network = f"nanocode-bench-egress-{uuid.uuid4().hex[:8]}"
    client.api.create_network(network, driver="bridge")
    bench.cleanup.push(lambda: client.api.remove_network(network))
    api = client.api
    server = api.create_container(
        bench.image,
        ["python3", "-c", SERVER],
        entrypoint="",
        name=f"{network}-server",
        user="0:0",
        host_config=api.create_host_config(network_mode=network, binds=[f"{folder}:/srv:ro"]),
        networking_config=api.create_networking_config({network: api.create_endpoint_config(aliases=[HOST])}),
        labels=lifecycle.owner_labels("bench", bench.project),  # swept with the benchmark's containers
    )["Id"]
    bench.cleanup.push(lambda: lifecycle.remove(client, server))
    api.start(server)
    return network


def _allowlisted(bench: Any, config: Any, network: str) -> AllowlistedSandbox:
    # The server's name resolves to a private address of the benchmark's network: an address rule lets it through.
    subnet = bench.client.api.inspect_network(network)["IPAM"]["Config"][0]["Subnet"]
    return AllowlistedSandbox(
        bench.client,
        config,
        [HOST, subnet],
        network,
        lambda confined: SandboxExecutor(bench.client, confined, OUTPUT_CAP),
        Discard(),
        lambda text: None,
    )


def download(bench: Any, config: Any, network: str) -> None:
    command = f"curl -sS --retry 5 --retry-connrefused -o /dev/null -w '%{{size_download}}' http://{HOST}/1mb.bin"
    proxied = _allowlisted(bench, config, network)
    bench.cleanup.push(proxied.close)
    direct = SandboxExecutor(bench.client, config, OUTPUT_CAP)
    bench.cleanup.push(direct.close)
    check = ok_result(str(SIZE))
    for executor in (proxied, direct):  # the server is up, and each path warm
        check(executor.run(command, 30))

    def through(executor: Any) -> Any:
        return lambda: check(executor.run(command, 30))

    samples = interleaved({"proxy": through(proxied), "direct": through(direct)}, bench.reps, bench.warmup)
    add = bench.report.add
    via = add(SECTION, "1 MB over HTTP through the egress proxy (curl)", "ms", ms(samples["proxy"]))
    straight = add(
        SECTION,
        f"  the same, straight from a sandbox on {network.rsplit('-', 1)[0]} (a bridge)",
        "ms",
        ms(samples["direct"]),
    )
    expect(len(proxied.network.audit.connections) >= bench.reps, "the proxy did not record the downloads")
    bench.report.target(
        "(12) 1 MB download, proxy / direct", via.median / straight.median, "<=", 1.5, "x", "ratio of medians"
    )


def startup(bench: Any, config: Any, network: str) -> None:
    """A goal's start with an allowlist (network, proxy, sandbox, proxy ready) against a plain one,
    taking turns; the time to take each down is measured apart."""
    times: dict[str, list[float]] = {"plain": [], "allowlist": [], "down": []}

    def plain() -> None:
        started = time.perf_counter()
        executor = SandboxExecutor(bench.client, config, OUTPUT_CAP)
        times["plain"].append(time.perf_counter() - started)
        executor.close()

    def allowlisted() -> None:
        started = time.perf_counter()
        executor = _allowlisted(bench, config, network)
        up = time.perf_counter()
        executor.close()
        times["allowlist"].append(up - started)
        times["down"].append(time.perf_counter() - up)

    interleaved({"plain": plain, "allowlist": allowlisted}, bench.reps + bench.warmup, 0)
    kept = {name: values[bench.warmup :] for name, values in times.items()}
    add = bench.report.add
    base = add(SECTION, "a goal's sandbox up, no allowlist", "ms", ms(kept["plain"]))
    ours = add(SECTION, "a goal's sandbox up on an allowlist (network, proxy ready)", "ms", ms(kept["allowlist"]))
    add(SECTION, "  then down (sandbox, proxy and network removed)", "ms", ms(kept["down"]))
    bench.report.target(
        "(12) extra start-up of a goal with an allowlist",
        ours.median - base.median,
        "<",
        300,
        "ms",
        "difference of medians",
    )
