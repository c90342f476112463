"""The tool runtime: a small process that runs commands and file operations.

It is started once per goal (as a local subprocess, or as the main process of
the sandbox container) and then answers JSON lines on stdin with JSON lines on
stdout, so no command pays for a new process of its own or a `docker exec`. It
must run on any python3 >= 3.8 with the standard library only: it is sent as
the first line of its own input, and nothing of nanocode is installed where it
runs.

Each command runs in a shell of its own session. The runtime is a child
subreaper, so every process a command starts stays below the runtime even when
it calls setsid and loses its parent; at a timeout, the command's processes are
its shell's tree, the orphans that came to the runtime while it ran, and
whatever still holds its output open. Shells for the next commands are started
ahead, while the model thinks, so a command costs little more than the command.
"""

import ctypes
import json
import os
import select
import signal
import stat
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PIPE_CHUNK = 65536
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


PIDS_FILES = (
    ("/sys/fs/cgroup/pids.current", "/sys/fs/cgroup/pids.max"),  # cgroup v2
    ("/sys/fs/cgroup/pids/pids.current", "/sys/fs/cgroup/pids/pids.max"),  # cgroup v1
)


def pids_nearly_full(spare=8):
    """True when the container's process limit leaves too little room for a command."""
    for current_file, max_file in PIDS_FILES:
        try:
            with open(current_file) as f:
                current = int(f.read())
            with open(max_file) as f:
                limit = f.read().strip()
        except (OSError, ValueError):
            continue
        return limit != "max" and current + spare >= int(limit)
    return False


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


def proc_stat(pid: "int | str") -> "list[bytes]":
    """The fields of /proc/PID/stat after the command name: state, parent, ... (raises OSError)."""
    with open("/proc/%s/stat" % pid, "rb") as f:
        fields = f.read().rsplit(b")", 1)
    if len(fields) != 2:
        raise OSError("unreadable /proc/%s/stat" % pid)
    return fields[1].split()


def process_table():
    """Maps each live (non-zombie) process to its parent."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = proc_stat(entry)
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root, parents=None):
    parents = process_table() if parents is None else parents
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def kill_all(find):
    """Kills what find() returns until it returns nothing.

    A process forking while we look shows up in the next pass; each pass kills
    what it sees, so even a fork bomb runs out of survivors.
    """
    for _ in range(200):
        pids = find()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)


def kill_tree(root: int) -> None:
    kill_all(lambda: descendants(root))
    try:
        os.kill(root, signal.SIGKILL)
    except OSError:
        pass


def become_subreaper():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, and a timeout finds those that hold the output


def own_children():
    """The runtime's direct children, read cheaply where the kernel tells them."""
    try:
        found = set()
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as f:
                found.update(int(pid) for pid in f.read().split())
        return found
    except OSError:
        me = os.getpid()
        return {pid for pid, ppid in process_table().items() if ppid == me}


# Runs the script that arrives on fd 3: a `cd` into the working directory, then
# the command. `source` reads it whole, where `read` would take a byte at a time.
BASH_BOOTSTRAP = ". /dev/fd/3"
# Without bash, the shell gets its directory and command as arguments, when the command comes.
SH_BOOTSTRAP = 'cd -- "$1" || exit 127; eval "$2"'


class Shell:
    """A shell in a session of its own, its output on pipes; started ahead of its command, or with it."""

    def __init__(self, cwd=None, command=None):
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        command_r, self.command_w = os.pipe()
        if command is None:
            argv = [SHELL, "-c", BASH_BOOTSTRAP]
        else:
            argv = [SHELL, "-c", SH_BOOTSTRAP, "sh", cwd, command.replace("\0", "")]
        try:
            # posix_spawn is a vfork: far cheaper than forking this interpreter.
            self.pid = os.posix_spawn(
                SHELL,
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                    (os.POSIX_SPAWN_DUP2, command_r, 3),
                ],
                setsid=True,
                setsigdef=(signal.SIGPIPE,),
            )
        except BaseException:
            for fd in (self.out_r, self.err_r, self.command_w):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            os.close(command_r)
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:
                pass

    def usable(self):
        """Still waiting for its command: neither gone nor stopped (by a SIGSTOP, say)."""
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0] != 0:
                return False
            return proc_stat(self.pid)[0] not in (b"T", b"t")
        except (ChildProcessError, OSError):
            return False

    def start(self, cwd, command):
        quoted = "'" + cwd.replace("'", "'\\''") + "'"
        script = "exec 3<&-; cd -- %s || exit 127\n%s\n" % (quoted, command.replace("\0", ""))
        data = script.encode("utf-8", "surrogateescape")
        while data:
            # A shell that stops reading (stopped, killed) must not hold the runtime.
            if not select.select([], [self.command_w], [], 5.0)[1]:
                raise OSError("the shell does not take its command")
            data = data[os.write(self.command_w, data[:PIPE_CHUNK]) :]
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
    # Shells started ahead: two, so that back-to-back commands still find one
    # that has finished starting.
    READY = 2

    def __init__(self):
        self.ready = []

    def prepare(self):
        """Tops up the shells started ahead."""
        while SHELL.endswith("bash") and len(self.ready) < self.READY:
            try:
                self.ready.append(Shell())
            except OSError:
                return  # out of processes: tried again when a command comes

    def ping(self, req):
        """The runtime's pid and its idle shells: so that a count of processes can leave them out."""
        return {"pid": os.getpid(), "ready": [shell.pid for shell in self.ready]}

    def stop_everything(self):
        for shell in self.ready:
            shell.discard()
        self.ready = []
        kill_all(lambda: descendants(os.getpid()))
        reap()

    def shell_for(self, cwd, command):
        while self.ready:
            shell = self.ready.pop(0)
            try:
                if shell.usable():
                    shell.start(cwd, command)
                    return shell
            except OSError:
                pass  # it was killed or stopped while it waited (say by `pkill bash`)
            shell.discard()
        if not SHELL.endswith("bash"):
            return Shell(cwd, command)
        shell = Shell()
        try:
            shell.start(cwd, command)
        except BaseException:
            shell.discard()
            raise
        return shell

    def run(self, req):
        started = time.monotonic()
        timeout = float(req.get("timeout") or 120)
        cap = int(req.get("cap") or 100000)
        cwd = req.get("cwd") or os.getcwd()
        oom_before = oom_kills()
        note = ""
        reap()
        if pids_nearly_full():
            # What earlier commands left running goes, so that this one can run at all.
            self.stop_everything()
            note = "[the process limit was reached: processes left running by earlier commands were stopped]\n"
        earlier = own_children()
        shell = self.shell_for(cwd, req["command"])
        # The next shell starts up while this command runs, not while the reply travels.
        self.prepare()
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
            spared = earlier | {pending_shell.pid for pending_shell in self.ready}
            kill_all(lambda: command_processes(shell.pid, spared, (shell.out_r, shell.err_r)))
            for fd in (shell.out_r, shell.err_r):  # what was printed before the kill
                while fd in pending and select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    streams[fd].add(data)
            if status is None:
                os.waitpid(shell.pid, 0)
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
        stderr = note + stderr
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


def command_processes(shell, spared, fds):
    """Every live process of a command: its shell and what is below it, what came to the
    runtime as an orphan while it ran (the runtime being a subreaper), and whatever else
    still holds its output open."""
    parents = process_table()
    me = os.getpid()
    roots = [shell] + [pid for pid, ppid in parents.items() if ppid == me and pid not in spared]
    found = set()
    for root in roots:
        if root in parents:
            found.add(root)
        found.update(descendants(root, parents))
    others = [pid for pid in descendants(me, parents) if pid not in found]
    spared_trees = set(spared)
    for pid in spared:
        spared_trees.update(descendants(pid, parents))
    found.update(pipe_holders(fds, [pid for pid in others if pid not in spared_trees] + list(spared_trees)))
    return sorted(found)


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


class NotARegularFile(Exception):
    pass


def open_regular(path, flags):
    """Opens a regular file only: a FIFO or a device (/dev/stdout, say) would block or corrupt the channel."""
    fd = os.open(path, flags | os.O_NONBLOCK, 0o666)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile("%s is not a regular file" % path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(req):
    cap = int(req.get("cap") or 100000)
    with os.fdopen(open_regular(req["path"], os.O_RDONLY), "rb") as f:
        data = f.read(cap + 1)
        size = os.fstat(f.fileno()).st_size
    if b"\0" in data[:8192]:
        return {"content": "(a binary file of %d bytes: look into it with a command such as xxd or file)" % size}
    if len(data) <= cap:
        return {"content": data.decode("utf-8", "replace")}
    text = data[:cap].decode("utf-8", "replace")
    return {"content": text + "\n[... file is %d bytes; only the first %d are shown ...]\n" % (size, cap)}


def write(req):
    path = req["path"]
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if os.path.exists(path) and not os.path.isfile(path):
        raise NotARegularFile("%s is not a regular file" % path)
    data = req["content"].encode("utf-8", "surrogateescape")
    with os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
        f.write(data)
    return {"bytes": len(data)}


def requests(fd):
    """The request lines; between them, the orphans that came to the runtime and died are reaped."""
    buffered = b""
    while True:
        if not select.select([fd], [], [], 0.2)[0]:
            reap()
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            yield line


def main():
    become_subreaper()  # what a command leaves running stays ours, to be found and ended
    # Keeps fd 3 taken, so that no pipe is ever fd 3 and a shell's fd 3 is always its command.
    os.open(os.devnull, os.O_RDONLY)
    runtime = Runtime()
    ops = {"run": runtime.run, "read": read, "write": write, "ping": runtime.ping}
    out = sys.stdout.buffer
    out.write(json.dumps({"hello": "nanocode-runtime", "version": 1, "pid": os.getpid()}).encode() + b"\n")
    out.flush()
    runtime.prepare()
    for line in requests(sys.stdin.fileno()):
        req = {}
        try:
            req = json.loads(line)
            reply = ops[req["op"]](req)
            reply["ok"] = True
        except NotARegularFile as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            if isinstance(exc, OSError) and exc.strerror:
                reply["error"] = "%s: %s" % (exc.strerror, exc.filename or "")
        reply["id"] = req.get("id") if isinstance(req, dict) else None
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
