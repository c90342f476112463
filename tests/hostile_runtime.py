"""The real runtime, turned hostile on request, as a command that took it over could make it.

A request with "HOSTILE:<mode>" in any of its strings (the command, the path, the content) is
carried out, and its reply is then replaced, or followed by something else, as <mode> says.
"""

from nanocode.runtime.client import SERVER_SOURCE

HOOK = r"""
_MODES = []
_real_send = Channel.send


def _hostile_send(self, source, data):
    if not _MODES:
        return _real_send(self, source, data)
    mode = _MODES.pop()
    reply = json.loads(data)
    if mode == "garbage":
        data = b"\x00\xff\xfe not json {\n"
    elif mode == "truncated":
        data = data[: len(data) // 2] + b"\n"
    elif mode == "cut-off":  # half a reply, and the runtime gone
        _real_send(self, source, data[: len(data) // 2])
        os._exit(0)
    elif mode == "endless":
        for _ in range(4096):  # 256 MB without a line's end, or until the reader gives up
            _real_send(self, source, b"x" * 65536)
        return None
    elif mode == "huge":
        data = json.dumps(dict(reply, stdout="y" * 50000000)).encode() + b"\n"
    elif mode == "deep":
        data = b"[" * 200000 + b"\n"
    elif mode == "list":
        data = b"[1, 2, 3]\n"
    elif mode == "wrong-id":
        data = json.dumps(dict(reply, id=reply["id"] + 1000)).encode() + b"\n"
    elif mode == "no-id":
        data = json.dumps({k: v for k, v in reply.items() if k != "id"}).encode() + b"\n"
    elif mode == "text-id":
        data = json.dumps(dict(reply, id=str(reply["id"]))).encode() + b"\n"
    elif mode == "failed":
        data = json.dumps({"id": reply["id"], "ok": False, "error": {"not": "text"}}).encode() + b"\n"
    elif mode.startswith("type-"):  # a field of the wrong type
        name = mode[len("type-") :]
        data = json.dumps(dict(reply, **{name: [1] if isinstance(reply.get(name), str) else "1"})).encode() + b"\n"
    return _real_send(self, source, data)


def _watched(op):
    def watched(*args):
        for value in args[-1].values():
            if isinstance(value, str) and "HOSTILE:" in value:
                _MODES.append(value.split("HOSTILE:", 1)[1].split()[0])
        return op(*args)

    return watched


Channel.send = _hostile_send
Runtime.run = _watched(Runtime.run)
read = _watched(read)
write = _watched(write)
"""

MAIN = 'if __name__ == "__main__":'
assert SERVER_SOURCE.count(MAIN) == 1
HOSTILE_SOURCE = SERVER_SOURCE.replace(MAIN, HOOK + "\n\n" + MAIN)

# What each op can be made to send; cut-off ends the runtime as well.
MODES = ["garbage", "truncated", "endless", "huge", "deep", "list", "wrong-id", "no-id", "text-id", "failed", "type-ok"]
FIELDS = {
    "run": [
        "type-stdout",
        "type-stderr",
        "type-exit_code",
        "type-signal",
        "type-timed_out",
        "type-oom",
        "type-cut",
        "type-duration",
    ],
    "read": ["type-content"],
    "write": [],
}
