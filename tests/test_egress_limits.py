"""The egress proxy at its container's process limit: connections it has no thread for are
answered 503 and recorded, one record each, like every other."""

import json
import socket
import subprocess
import time
import uuid
from typing import Any

from nanocode.egress.goal import PROXY_SOURCE
from nanocode.runtime.client import BOOTSTRAP

CONNECTIONS = 60


def test_connections_past_the_thread_limit_get_a_503_and_a_record(docker_engine: Any, sandbox_image: str) -> None:
    name = f"nanocode-test-egress-limit-{uuid.uuid4().hex[:8]}"
    command = ["docker", "run", "-i", "--rm", "--name", name, "--pids-limit", "24", "-p", "127.0.0.1::3128"]
    process = subprocess.Popen([*command, sandbox_image, *BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin and process.stdout
    try:
        process.stdin.write(json.dumps(PROXY_SOURCE).encode() + b"\n")
        process.stdin.write(json.dumps({"allow": ["*.example.org"]}).encode() + b"\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["ready"] is True
        port = int(docker_engine.api.port(name, 3128)[0]["HostPort"])
        held = []
        for _ in range(CONNECTIONS):  # each holds a thread: its request never ends
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET http://a.example.org/ HTTP/1.1\r\n")
            held.append(sock)
        time.sleep(1.0)
        answered = []
        for sock in held:
            sock.setblocking(False)
            try:
                answered.append(sock.recv(200))
            except BlockingIOError:
                answered.append(b"")
        for sock in held:
            sock.close()
        process.stdin.close()
        lines = process.stdout.read().splitlines()
        process.wait(30)
    finally:
        process.kill()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    told = [json.loads(line) for line in lines]
    opened = [t["open"] for t in told if "open" in t]
    records = {t["number"]: t["connection"] for t in told if "connection" in t}
    assert len(opened) == CONNECTIONS and sorted(records) == sorted(opened)  # one record each
    busy = [r for r in records.values() if r["rule"] == "too-many"]
    assert busy and sum(a.startswith(b"HTTP/1.1 503") for a in answered) == len(busy)
    assert all(r["error"] == "too many connections at once" for r in busy)
