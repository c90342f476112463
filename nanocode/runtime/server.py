"""The tool runtime: a small process that runs commands and file operations.

It is started once per goal (as a local subprocess, or as the main process of
the sandbox container) and then answers JSON lines on stdin with JSON lines on
stdout, so no command pays for a new process of its own or a `docker exec`. It
must run on any python3 >= 3.8 with the standard library only: it is sent as
the first line of its own input, and nothing of nanocode is installed where it
runs.

Each command runs in a shell of its own session that is a child subreaper:
every process the command starts, even one that calls setsid and loses its
parent, stays below that shell, so a timeout can find and kill all of it. The
shell for the next command is started ahead, while the model thinks, so a
command costs little more than the command itself.
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
        pass  # not Linux: the command's own session is still killed


# Waits for the working directory and the command, each ended by a NUL, on fd 3.
BASH_BOOTSTRAP = (
    'IFS= read -r -d "" __nanocode_cwd <&3 || exit 0; '
    'IFS= read -r -d "" __nanocode_command <&3; '
    "exec 3<&-; "
    'cd -- "$__nanocode_cwd" || exit 127; '
    "unset __nanocode_cwd; "
    'eval "$__nanocode_command"'
)


class Shell:
    """A shell in its own session with its output on pipes, started before or with its command."""

    def __init__(self, command=None, cwd=None):
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        command_r, self.command_w = os.pipe()
        # Without bash (sh cannot read up to a NUL), the shell gets its command now.
        argv = [SHELL, "-c", BASH_BOOTSTRAP if command is None else command]
        try:
            self.pid = os.fork()
        except OSError:
            for fd in (self.out_r, out_w, self.err_r, err_w, command_r, self.command_w):
                os.close(fd)
            raise
        if self.pid == 0:
            try:
                os.setsid()
                become_subreaper()
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.dup2(command_r, 3)
                os.set_inheritable(3, True)
                if cwd:
                    os.chdir(cwd)
                os.execv(SHELL, argv)
            except BaseException as exc:
                os.write(2, ("cannot start %s: %s\n" % (SHELL, exc)).encode())
            os._exit(127)
        os.close(out_w)
        os.close(err_w)
        os.close(command_r)
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:
                pass

    def exited(self):
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            return True

    def start(self, cwd, command):
        # A NUL ends each field, and no shell word can hold one anyway.
        data = cwd.encode() + b"\0" + command.replace("\0", "").encode() + b"\0"
        while data:
            data = data[os.write(self.command_w, data) :]
        os.close(self.command_w)
        self.command_w = None

    def discard(self):
        kill_tree(self.pid)
        self.close()

    def close(self):
        for fd in (self.out_r, self.err_r, self.command_w, self.pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


class Runtime:
    def __init__(self):
        self.ready = None  # the shell for the next command

    def prepare(self):
        """Starts the next command's shell; called once the last reply is out."""
        if self.ready is None and SHELL.endswith("bash"):
            try:
                self.ready = Shell()
            except OSError:
                self.ready = None  # out of processes: tried again when a command comes

    def shell_for(self, cwd, command):
        shell, self.ready = self.ready, None
        if shell is not None:
            try:
                if not shell.exited():
                    shell.start(cwd, command)
                    return shell
            except OSError:
                pass  # it was killed while waiting (say by `pkill bash`)
            shell.discard()
        if SHELL.endswith("bash"):
            shell = Shell()
            shell.start(cwd, command)
            return shell
        return Shell(command, cwd)

    def run(self, req):
        started = time.monotonic()
        timeout = float(req.get("timeout") or 120)
        cap = int(req.get("cap") or 100000)
        cwd = req.get("cwd") or os.getcwd()
        oom_before = oom_kills()
        shell = self.shell_for(cwd, req["command"])
        streams = {shell.out_r: Capped(cap), shell.err_r: Capped(cap)}
        pending = [shell.out_r, shell.err_r]
        if shell.pidfd is not None:
            pending.append(shell.pidfd)
        status = None
        deadline = started + timeout
        timed_out = False
        while pending or status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            # Without a pidfd, the shell's exit is polled for.
            wait = left if shell.pidfd is not None else min(left, 0.01)
            ready, _, _ = select.select(pending, [], [], wait)
            for fd in ready:
                if fd == shell.pidfd:
                    pending.remove(fd)
                    continue
                data = os.read(fd, 65536)
                if data:
                    streams[fd].add(data)
                else:
                    pending.remove(fd)
            if status is None and (shell.pidfd is None or shell.pidfd not in pending):
                pid, code = os.waitpid(shell.pid, os.WNOHANG)
                if pid:
                    status = code
        if timed_out:
            kill_command(shell.pid, [shell.out_r, shell.err_r])
            for fd in (shell.out_r, shell.err_r):  # what was printed before the kill
                while fd in pending and select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    streams[fd].add(data)
            if status is None:
                _, status = os.waitpid(shell.pid, 0)
                status = None  # killed by us: no exit code of its own
        shell.close()
        reap()
        exit_code = sig = None
        if status is not None:
            code = _exitcode(status)
            if code < 0:
                sig = -code
            else:
                exit_code = code
        oom_after = oom_kills()
        stdout, stdout_cut = streams[shell.out_r].render()
        stderr, stderr_cut = streams[shell.err_r].render()
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


def pipe_holders(fds, among):
    """The processes, of those given, that hold one of these pipes open."""
    names = set()
    for fd in fds:
        try:
            names.add("pipe:[%d]" % os.fstat(fd).st_ino)
        except OSError:
            pass
    holders = []
    for pid in among:
        try:
            links = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for link in links:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, link)) in names:
                    holders.append(pid)
                    break
            except OSError:
                continue
    return holders


def kill_command(shell, fds):
    """Kills the shell, everything below it, and whatever else still holds its output open."""
    # A process forking while we scan shows up in the next pass; each pass
    # kills what it sees, so even a fork bomb runs out of survivors.
    for _ in range(200):
        ours = descendants(os.getpid())
        victims = descendants(shell)
        victims += pipe_holders(fds, [pid for pid in ours if pid not in victims and pid != shell])
        if shell in ours:
            victims.append(shell)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


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


def main():
    become_subreaper()  # what a command leaves running stays ours, to be found and ended
    runtime = Runtime()
    ops = {"run": runtime.run, "read": read, "write": write, "ping": lambda req: {"pid": os.getpid()}}
    out = sys.stdout.buffer
    out.write(json.dumps({"hello": "nanocode-runtime", "version": 1, "pid": os.getpid()}).encode() + b"\n")
    out.flush()
    for line in sys.stdin.buffer:
        req = {}
        try:
            req = json.loads(line)
            reply = ops[req["op"]](req)
            reply["ok"] = True
        except Exception as exc:
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            if isinstance(exc, OSError) and exc.strerror:
                reply["error"] = "%s: %s" % (exc.strerror, exc.filename or "")
        reply["id"] = req.get("id") if isinstance(req, dict) else None
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
        runtime.prepare()


if __name__ == "__main__":
    main()
