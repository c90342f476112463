"""The tool runtime: a small process that runs commands and file operations.

It is started once per goal (as a local subprocess, or inside the sandbox
container through one `docker exec`) and then answers JSON lines on stdin with
JSON lines on stdout, so no command pays for a new exec. It must run on any
python3 >= 3.8 with the standard library only: inside the sandbox it is passed
as the source of `python3 -c`, and nothing of nanocode is installed there.

Each command runs under a supervisor that is a child subreaper: every process
the command starts, even one that calls setsid and is orphaned, stays below
the supervisor, so a timeout can find and kill all of it.
"""

import ctypes
import json
import os
import select
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
OOM_FILES = (
    "/sys/fs/cgroup/memory.events",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
)


class Capped:
    """Keeps the head and the tail of a stream, and counts what was cut."""

    def __init__(self, limit):
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data):
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.half:
                del self.tail[: len(self.tail) - self.half]

    def render(self):
        tail = bytes(self.tail[-self.half :]) if self.tail else b""
        cut = self.total - len(self.head) - len(tail)
        text = self.head.decode("utf-8", "replace")
        if cut > 0:
            text += "\n[... %d bytes cut ...]\n" % cut
        return text + tail.decode("utf-8", "replace"), max(cut, 0)


def oom_kills():
    for path in OOM_FILES:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def process_table():
    """Maps each live (non-zombie) process to its parent."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root):
    parents = process_table()
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(root: int) -> None:
    # A process forking while we scan shows up in the next pass; each pass
    # kills what it sees, so even a fork bomb runs out of survivors.
    for _ in range(200):
        pids = descendants(root)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)
    try:
        os.kill(root, signal.SIGKILL)
    except OSError:
        pass


def become_subreaper():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the command's own process group is still killed


def supervise(command, cwd, out_w, err_w, status_w):
    """Runs in the forked supervisor; never returns."""
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        become_subreaper()
        shell = os.fork()
        if shell == 0:
            try:
                os.setsid()
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.chdir(cwd)
                os.execv(SHELL, [SHELL, "-c", command])
            except BaseException as exc:
                os.write(2, ("cannot start %s: %s\n" % (SHELL, exc)).encode())
            os._exit(127)
        # The supervisor itself must not hold the channel or the output pipes.
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(out_w)
        os.close(err_w)
        _, status = os.waitpid(shell, 0)
        os.write(status_w, str(status).encode())
        os.close(status_w)
        while True:  # reap orphans until the last one is gone
            try:
                os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    except BaseException:
        code = 1
    os._exit(code)


def run(req):
    started = time.monotonic()
    timeout = float(req.get("timeout") or 120)
    cap = int(req.get("cap") or 100000)
    cwd = req.get("cwd") or os.getcwd()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    status_r, status_w = os.pipe()
    oom_before = oom_kills()
    supervisor = os.fork()
    if supervisor == 0:
        os.close(out_r)
        os.close(err_r)
        os.close(status_r)
        supervise(req["command"], cwd, out_w, err_w, status_w)
    os.close(out_w)
    os.close(err_w)
    os.close(status_w)
    streams = {out_r: Capped(cap), err_r: Capped(cap)}
    status = b""
    pending = [out_r, err_r, status_r]
    deadline = started + timeout
    timed_out = False
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(pending, [], [], left)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                pending.remove(fd)
                os.close(fd)
            elif fd == status_r:
                status += data
            else:
                streams[fd].add(data)
    if timed_out:
        kill_tree(supervisor)
        for fd in pending:
            if fd in streams:  # what was printed before the kill
                while select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    streams[fd].add(data)
            os.close(fd)
    reap()
    exit_code = sig = None
    if status:
        code = _exitcode(int(status))
        if code < 0:
            sig = -code
        else:
            exit_code = code
    oom_after = oom_kills()
    stdout, stdout_cut = streams[out_r].render()
    stderr, stderr_cut = streams[err_r].render()
    return {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "signal": sig,
        "timed_out": timed_out,
        "oom": oom_before is not None and oom_after is not None and oom_after > oom_before,
        "cut": stdout_cut + stderr_cut,
        "duration": time.monotonic() - started,
    }


def _exitcode(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def read(req):
    cap = int(req.get("cap") or 100000)
    with open(req["path"], "rb") as f:
        data = f.read(cap + 1)
        size = os.fstat(f.fileno()).st_size
    if len(data) <= cap:
        return {"content": data.decode("utf-8", "replace"), "cut": 0}
    text = data[:cap].decode("utf-8", "replace")
    note = "\n[... file is %d bytes; only the first %d are shown ...]\n" % (size, cap)
    return {"content": text + note, "cut": size - cap}


def write(req):
    path = req["path"]
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    data = req["content"].encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return {"bytes": len(data)}


OPS = {"run": run, "read": read, "write": write, "ping": lambda req: {"pid": os.getpid()}}


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    out = sys.stdout.buffer
    out.write(json.dumps({"hello": "nanocode-runtime", "version": 1, "pid": os.getpid()}).encode() + b"\n")
    out.flush()
    for line in sys.stdin.buffer:
        req = {}
        try:
            req = json.loads(line)
            reply = OPS[req["op"]](req)
            reply["ok"] = True
        except Exception as exc:
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            if isinstance(exc, OSError) and exc.strerror:
                reply["error"] = "%s: %s" % (exc.strerror, exc.filename or "")
        reply["id"] = req.get("id") if isinstance(req, dict) else None
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
