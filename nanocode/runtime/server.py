"""The tool runtime: a small process that runs commands and file operations.

It is started once per goal (as a local subprocess, or as the main process of
the sandbox container) and then answers JSON lines on stdin with JSON lines on
stdout, so no command pays for a new process of its own or a `docker exec`. It
must run on any python3 >= 3.8 with the standard library only: it is sent as
the first line of its own input, and nothing of nanocode is installed where it
runs.

Each command runs in a shell of its own, in a process group of its own. The
runtime is a child subreaper, so every process a command starts stays below the
runtime even when it calls setsid and loses its parent; at a timeout, the
command's processes are its shell's tree, the orphans that came to the runtime
while it ran, and whatever still holds its output open. Shells for the next
commands are forked ahead by a long-lived bash (SHELL_SERVER), so a command
costs little more than the command.
"""

import ctypes
import itertools
import json
import os
import select
import signal
import socket
import stat
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
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


class Live:
    """The latest output of a running command, told to the client a few times a second at most (where
    it asked for it): a person sees the command at work; the model gets the whole capped output."""

    EVERY = 0.25
    KEEP = 512

    def __init__(self, channel):
        self.channel = channel
        self.recent = b""
        self.fresh = False
        self.told = time.monotonic()

    def add(self, data):
        self.recent = (self.recent + data)[-self.KEEP :]
        self.fresh = True

    def tell(self):
        if self.fresh and self.channel.replying is not None and time.monotonic() - self.told >= self.EVERY:
            self.channel.progress(self.recent.decode("utf-8", "replace"))
            self.fresh = False
            self.told = time.monotonic()


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


# What this kernel (or gVisor's, which has neither) lacks, said in the hello: without a
# subreaper, orphans go to init, each command's shell is the runtime's own child (no shells
# forked ahead: those reach the runtime as orphans), and a timeout finds a command's processes
# by its session and by the pipes they hold; without pidfds, the shell's exit is polled.
FALLBACKS = []


def become_undumpable():
    """No command can ptrace the runtime, or read or write its memory through /proc/PID/mem: both
    need the target to be dumpable (or CAP_SYS_PTRACE, which the sandbox drops). A program a
    command runs is dumpable again once it execs, as any is."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
            return
    except (OSError, AttributeError):
        pass  # not Linux
    FALLBACKS.append("dumpable: commands may trace the runtime (%s)" % os.strerror(ctypes.get_errno() or 22))


def become_subreaper():
    """True when the kernel made the runtime a child subreaper (prctl fails with EINVAL under gVisor)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return True
    except (OSError, AttributeError):
        pass  # not Linux
    FALLBACKS.append("no child subreaper (%s)" % os.strerror(ctypes.get_errno() or 22))
    return False


def check_pidfds():
    """pidfd_open fails with ENOSYS on kernels before 5.3 and under gVisor."""
    fd = open_pidfd(os.getpid())
    if fd is None:
        FALLBACKS.append("no pidfd_open: a command's exit is polled")
    else:
        os.close(fd)


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


# Shells are started ahead of their commands, while the model thinks, and
# without holding up the runtime: one long-lived bash per runtime (the shell
# server) forks them on request. A fork of a running bash costs a fraction of a
# new bash. Each is forked twice over, so that it comes to the runtime (a
# subreaper) as a child of its own, whose exit status the runtime reads, and
# lives in a process group of its own. It opens its pipes (named ones, in a
# folder of the runtime's: the runtime is not dumpable, so its /proc/PID/fd is
# out of reach), says its pid, and then waits to source its script from fd 3.
# One cost of forking: `$$` in a command names the server, which ignores the
# signals a command may send it; `$BASHPID` names the command's own shell.
SHELL_SERVER = """exec 3<&-
trap : HUP INT TERM QUIT USR1 USR2 ALRM
while :; do
  read -r n s o e
  case $? in 0) ;; 1) exit 0 ;; *) continue ;; esac
  ( set -m
    ( set +m
      exec </dev/null >"$o" 2>"$e" 3<"$s" || {
        echo "$n failed" >&4
        exit 127
      }
      echo "$n $BASHPID" >&4
      exec 4>&-
      unset n s o e
      . /dev/fd/3
    ) &
  )
done
"""
# The server reads its program from fd 3; `source` reads it whole, where `read` takes a byte at a time.
BASH_BOOTSTRAP = ". /dev/fd/3"
# Without bash, each command gets a new shell, with its directory and command as arguments.
SH_BOOTSTRAP = 'cd -- "$1" || exit 127; eval "$2"'
# Python ignores SIGPIPE and SIGXFSZ, and an engine's init may hand the runtime others ignored
# (SIGQUIT under Podman): a command must meet every signal as any program would.
DEFAULT_SIGNALS = tuple(s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP))
# How long a shell may take to take its input, or the runtime's socket to connect.
SHELL_PATIENCE = 5.0
# How long the shell server may take to fork a shell (it answers in a millisecond when well;
# bash retries a failing fork for seconds): past it, a command gets a new shell.
FORK_PATIENCE = 2.0


def spawn(argv, fds):
    """Starts a program in a session of its own with just these fds (target: source; /dev/null
    where none is given). posix_spawn is a vfork: far cheaper than forking this interpreter."""
    actions = []
    for target in sorted(set(fds) | {0, 1, 2}):
        source = fds.get(target)
        if source is None:
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS)


def open_pidfd(pid):
    if hasattr(os, "pidfd_open"):
        try:
            return os.pidfd_open(pid)
        except OSError:
            pass
    return None


def close_all(fds):
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def write_all(fd, data, what):
    """Writes to a pipe whose reader may stop reading (stopped, killed) without holding the runtime."""
    while data:
        if not select.select([], [fd], [], SHELL_PATIENCE)[1]:
            raise OSError("%s does not take its input" % what)
        data = data[os.write(fd, data[:PIPE_CHUNK]) :]


def script_for(cwd, command):
    quoted = "'" + cwd.replace("'", "'\\''") + "'"
    script = "exec 3<&-; cd -- %s || exit 127\n%s\n" % (quoted, command.replace("\0", ""))
    return script.encode("utf-8", "surrogateescape")


def is_running(pid):
    """Neither gone nor stopped (by a SIGSTOP, say)."""
    try:
        return proc_stat(pid)[0] not in (b"Z", b"X", b"T", b"t")
    except OSError:
        return False


class Shell:
    """A command's shell as the runtime sees it: its pid, a pidfd where there is one, its output."""

    pid = None
    pidfd = None

    def __init__(self):
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()

    def _close(self, *names):
        """Closes these fds once: a number closed twice may belong to another pipe by then."""
        for name in names:
            fd = getattr(self, name)
            setattr(self, name, None)
            close_all((fd,))

    def started(self, pid):
        """The shell has its own ends of the pipes: the runtime's go, so that their end is the command's."""
        self.pid = pid
        self.pidfd = open_pidfd(pid)
        self._close("out_w", "err_w")

    def discard(self):
        if self.pid is not None:
            kill_tree(self.pid)
        self.close()

    def close(self):
        self._close("out_r", "out_w", "err_r", "err_w", "pidfd")


def new_shell(cwd, command):
    """A new shell for one command, given its directory and command as arguments."""
    if SHELL.endswith("bash"):
        return new_bash(cwd, command)
    shell = Shell()
    try:
        argv = [SHELL, "-c", SH_BOOTSTRAP, "sh", cwd, command.replace("\0", "")]
        shell.started(spawn(argv, {1: shell.out_w, 2: shell.err_w}))
    except BaseException:
        shell.close()
        raise
    return shell


def new_bash(cwd, command):
    """A new bash that reads its script from a pipe, as forked shells do: a command line holds
    no more than 128 KiB, and a command may be longer (the only way without a subreaper)."""
    script = script_for(cwd, command)
    shell = Shell()
    script_r, script_w = os.pipe()
    try:
        try:
            shell.started(spawn([SHELL, "-c", BASH_BOOTSTRAP, "sh"], {1: shell.out_w, 2: shell.err_w, 3: script_r}))
        finally:
            close_all((script_r,))
        write_all(script_w, script, "the shell")
    except BaseException:
        shell.discard()
        raise
    finally:
        close_all((script_w,))
    return shell


def named_pipe(path):
    """A named pipe made at path, opened at both ends (read end, write end), blocking as os.pipe's."""
    os.mkfifo(path, 0o600)
    read_end = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_end = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except BaseException:
        os.close(read_end)
        raise
    os.set_blocking(read_end, True)
    os.set_blocking(write_end, True)
    return read_end, write_end


class ForkedShell(Shell):
    """A shell the server forks ahead of its command; it waits for its script on a pipe. Its pipes
    are named ones in the runtime's own folder, which the shell opens by name and which go as soon
    as it has them: the runtime is not dumpable, so no process can open its fds through /proc."""

    failed = False  # it said it could not open its pipes

    def __init__(self, number, folder):
        self.number = number
        self.paths = [os.path.join(folder, "%d.%s" % (number, end)) for end in ("out", "err", "script")]
        self.out_r = self.out_w = self.err_r = self.err_w = self.script_r = self.script_w = None
        try:
            self.out_r, self.out_w = named_pipe(self.paths[0])
            self.err_r, self.err_w = named_pipe(self.paths[1])
            self.script_r, self.script_w = named_pipe(self.paths[2])
        except BaseException:
            self.close()
            raise

    def request(self):
        out, err, script = self.paths
        return ("%d %s %s %s\n" % (self.number, script, out, err)).encode()

    def unlink(self):
        for path in self.paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    def started(self, pid):
        Shell.started(self, pid)
        self._close("script_r")
        self.unlink()

    def start(self, cwd, command):
        write_all(self.script_w, script_for(cwd, command), "the shell")
        # A named pipe opened again with no writer left waits for one (an unnamed one would not):
        # the shell's `. /dev/fd/3` must have it open before its end of input is given.
        deadline = time.monotonic() + SHELL_PATIENCE
        while not self.sourcing() and time.monotonic() < deadline:
            time.sleep(0.0005)
        self._close("script_w")

    def sourcing(self):
        """The shell holds its script on an fd other than 3 (its own `. /dev/fd/3`), or is gone. Never
        said of a shell that closed an fd as it was looked at (its `exec 4>&-`): its script's end
        given then, its `. /dev/fd/3` would wait for a writer for good, and its command hang."""
        mine = os.fstat(self.script_w)
        held = fds_holding(self.pid, {(mine.st_dev, mine.st_ino)})
        return held is None or any(fd != "3" for fd in held) or not is_running(self.pid)

    def close(self):
        Shell.close(self)
        self._close("script_r", "script_w")
        self.unlink()


class ShellServer:
    """The bash that forks shells ahead of their commands (SHELL_SERVER).

    The pipes of a shell not yet reported are lent by name (named pipes in the server's own
    folder): they stay open until the shell says its pid, or until the server is discarded
    with every shell it has not reported (its tree killed first, the pipe it reports on
    closed, and the names removed, so that no late shell can open another's pipe)."""

    def __init__(self, folder):
        self.folder = folder  # the runtime's, for the forked shells' named pipes
        control_r, self.control_w = os.pipe()
        self.notify_r, notify_w = os.pipe()
        program_r, program_w = os.pipe()
        try:
            self.pid = spawn([SHELL, "-c", BASH_BOOTSTRAP], {0: control_r, 3: program_r, 4: notify_w})
        except BaseException:
            close_all((self.control_w, self.notify_r, program_w))
            raise
        finally:
            close_all((control_r, notify_w, program_r))
        try:
            write_all(program_w, SHELL_SERVER.encode(), "the shell server")
        finally:
            close_all((program_w,))
        os.set_blocking(self.control_w, False)
        os.set_blocking(self.notify_r, False)
        self.buffered = b""
        self.forked = {}  # number: the shell, until it says its pid

    def fork(self):
        shell = ForkedShell(next(SHELL_NUMBERS), self.folder)
        try:
            os.write(self.control_w, shell.request())
        except BaseException:
            shell.close()
            raise
        self.forked[shell.number] = shell
        return shell

    def holds_pipes(self, shell, pid):
        """The process said on the notify pipe (anything in the sandbox can write there) holds this
        shell's stderr and script pipes as its fds 2 and 3, as the shell does until its command
        comes. Not fd 1: bash's `echo ... >&4` that says the pid points fd 1 at the notify pipe
        until the echo returns, and the runtime may look in between."""
        if pid in (os.getpid(), self.pid):
            return False
        try:
            return all(
                os.stat("/proc/%d/fd/%d" % (pid, fd)).st_ino == os.fstat(mine).st_ino
                for fd, mine in ((2, shell.err_r), (3, shell.script_w))
            )
        except OSError:
            pass
        return False

    def collect(self):
        """Takes in what the forked shells have said, without waiting."""
        while True:
            try:
                data = os.read(self.notify_r, 4096)
            except BlockingIOError:
                return
            if not data:
                raise OSError("the shell server is gone")
            self.buffered += data
            while b"\n" in self.buffered:
                line, self.buffered = self.buffered.split(b"\n", 1)
                number, _, pid = line.partition(b" ")
                shell = self.forked.get(int(number)) if number.isdigit() else None
                if shell is None:
                    continue
                if pid.isdigit() and self.holds_pipes(shell, int(pid)):
                    del self.forked[shell.number]
                    shell.started(int(pid))
                else:  # it could not open its pipes (/proc may be out of reach), and exits
                    shell.failed = True

    def wait_for(self, shell):
        """Until the forked shell has said its pid (raises OSError)."""
        deadline = time.monotonic() + FORK_PATIENCE
        while True:
            self.collect()
            if shell.pid is not None:
                return
            if shell.failed:
                raise OSError("the shell could not open its pipes")
            left = deadline - time.monotonic()
            if left <= 0 or not is_running(self.pid):
                raise OSError("the shell server does not answer")
            select.select([self.notify_r], [], [], min(left, 0.05))

    def discard(self):
        try:
            self.collect()  # shells that did start are ready shells like any other
        except OSError:
            pass
        kill_tree(self.pid)
        close_all((self.control_w, self.notify_r))
        for shell in self.forked.values():
            shell.discard()
        self.forked = {}


def remove_folder(folder):
    """The runtime's folder of named pipes, with what a late shell (one its server forked as it was
    killed) may have made there once a pipe's name was gone: files of its own, never followed."""
    try:
        for name in os.listdir(folder):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
        os.rmdir(folder)
    except OSError:
        pass


SHELLS_PREFIX = "nanocode-shells-"
# Forked shells are numbered across shell servers: a new server's shells take no name of an old one's.
SHELL_NUMBERS = itertools.count(1)


class Runtime:
    # Shells forked ahead: two, so that back-to-back commands still find one
    # that has finished starting.
    READY = 2
    # Forked shells that fail to open their pipes in a row (/proc out of reach) before forking
    # stops for good; a server slow to fork (out of processes, for a while) is only replaced.
    FORK_FAILURES = 3

    def __init__(self, channel):
        self.channel = channel  # watched while a command runs: the client may go at any moment
        # The forked shells' named pipes; said in the hello, so that a host that outlives a killed
        # runtime removes it (SHELLS_PREFIX, in the temporary folder).
        self.folder = tempfile.mkdtemp(prefix=SHELLS_PREFIX)
        self.server = None
        self.ready = []
        # Else each command gets a new shell; and without a subreaper, forked shells never reach the runtime.
        self.forking = SHELL.endswith("bash") and not any(f.startswith("no child subreaper") for f in FALLBACKS)
        self.failures = 0

    def prepare(self):
        """Tops up the shells forked ahead."""
        if not self.forking:
            return
        try:
            if self.server is None:
                self.server = ShellServer(self.folder)
            while len(self.ready) < self.READY:
                self.ready.append(self.server.fork())
        except OSError:
            self.discard_server()  # out of processes, or the server died: tried again at the next command

    def discard_server(self):
        if self.server is not None:
            self.server.discard()
            self.server = None
        self.ready = [shell for shell in self.ready if shell.pid is not None]

    def idle_pids(self):
        """The server and the shells waiting for a command."""
        if self.server is not None:
            try:
                self.server.collect()
            except OSError:
                self.discard_server()
        pids = [self.server.pid] if self.server is not None else []
        return pids + [shell.pid for shell in self.ready if shell.pid is not None]

    def ping(self, req):
        """The runtime's pid and its idle shells: so that a count of processes can leave them out."""
        return {"pid": os.getpid(), "ready": self.idle_pids()}

    def stop_everything(self):
        self.discard_server()
        for shell in self.ready:
            shell.discard()
        self.ready = []
        kill_all(lambda: descendants(os.getpid()))
        reap()

    def shell_for(self, cwd, command):
        if self.server is not None and not is_running(self.server.pid):
            self.discard_server()  # killed or stopped since the last command (say by `pkill bash`)
        for _ in range(self.READY + 1):
            self.prepare()
            if not self.ready:
                break
            shell = self.ready.pop(0)
            try:
                if shell.pid is None:
                    if self.server is None:
                        raise OSError("its server is gone")
                    self.server.wait_for(shell)
                    self.failures = 0
                if is_running(shell.pid):
                    shell.start(cwd, command)
                    self.prepare()  # the server forks the next one while this command runs
                    return shell
            except OSError:
                if shell.pid is None:
                    if shell.failed:
                        self.failures += 1
                        self.forking = self.failures < self.FORK_FAILURES
                    self.discard_server()  # with the shells it has not reported: see ShellServer
                    shell.discard()
                    break  # no more waiting: this command gets a new shell
            shell.discard()
        return new_shell(cwd, command)

    def run(self, req):
        started = time.monotonic()
        timeout = float(req.get("timeout") or 120)
        cap = int(req.get("cap") or 100000)
        cwd = req.get("cwd") or os.getcwd()
        script_for(cwd, req["command"])  # raises for text no shell can take, before a shell is taken for it
        oom_before = oom_kills()
        note = ""
        reap()
        if pids_nearly_full():
            # What earlier commands left running goes, so that this one can run at all.
            self.stop_everything()
            note = "[the process limit was reached: processes left running by earlier commands were stopped]\n"
        earlier = own_children()
        shell = self.shell_for(cwd, req["command"])
        deadline = time.monotonic() + timeout  # from the moment the command has its shell
        out, err = Capped(cap), Capped(cap)
        streams = {shell.out_r: out, shell.err_r: err}
        live = Live(self.channel)
        pending = [shell.out_r, shell.err_r]
        if shell.pidfd is not None:
            pending.append(shell.pidfd)
        status = None
        timed_out = False
        while pending or status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if status is not None or shell.pidfd in pending:
                wait = left
            else:  # polled: there is no pidfd, or the shell is not yet ours (see SHELL_SERVER)
                wait = min(left, 0.01 if shell.pidfd is None else 0.001)
            if self.channel.lease:
                wait = min(wait, 0.5)
            if live.fresh and self.channel.replying is not None:
                wait = min(wait, Live.EVERY)  # what came last is told even if nothing follows it
            ready, _, _ = select.select([*pending, Channel.STDIN], [], [], wait)
            for fd in ready:
                if fd == Channel.STDIN:
                    self.channel.take(fd)  # raises ClientGone at its end
                    continue
                if fd == shell.pidfd:
                    pending.remove(fd)
                    continue
                data = os.read(fd, 65536)
                if data:
                    streams[fd].add(data)
                    live.add(data)
                else:
                    pending.remove(fd)
            live.tell()
            self.channel.check_lease()  # after what came on stdin was taken
            if status is None and (shell.pidfd is None or shell.pidfd not in pending):
                try:
                    pid, code = os.waitpid(shell.pid, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if pid:
                    status = code
        if timed_out:
            spared = earlier | set(self.idle_pids())
            kill_all(lambda: command_processes(shell.pid, spared, (shell.out_r, shell.err_r)))
            for fd in (shell.out_r, shell.err_r):  # what was printed before the kill
                while fd in pending and select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    streams[fd].add(data)
            if status is None:
                try:
                    os.waitpid(shell.pid, 0)
                except ChildProcessError:
                    pass  # not yet handed to the runtime: reaped later, with the orphans
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
        stdout, stdout_cut = out.render()
        stderr, stderr_cut = err.render()
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
    if FALLBACKS and FALLBACKS[0].startswith("no child subreaper"):
        # Orphans went to init: those still in the shell's session (it leads one), and any process
        # outside the runtime's tree, are the command's if they hold its output.
        found.update(pid for pid in parents if pid != me and session_of(pid) == shell)
        others = [pid for pid in parents if pid not in (1, me) and pid not in found]
    found.update(pipe_holders(fds, [pid for pid in others if pid not in spared_trees] + list(spared_trees)))
    return sorted(found)


def session_of(pid):
    try:
        return int(proc_stat(pid)[3])
    except (OSError, IndexError, ValueError):
        return None


def pipe_holders(fds, among):
    """The processes, of those given, that hold one of these pipes open."""
    names = set()  # a pipe, named or not, by its device and inode
    for fd in fds:
        try:
            found = os.fstat(fd)
            names.add((found.st_dev, found.st_ino))
        except OSError:
            pass
    return [pid for pid in among if fds_holding(pid, names)]


def fds_holding(pid, names):
    """The fds of a process that hold one of these files (device, inode), as /proc names them; None
    when it has none to list (it is gone). An fd closed as it is looked at holds nothing."""
    try:
        links = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    held = []
    for link in links:
        try:
            found = os.stat("/proc/%d/fd/%s" % (pid, link))
        except OSError:
            continue
        if (found.st_dev, found.st_ino) in names:
            held.append(link)
    return held


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
        if req.get("lines"):
            return read_lines(f, req["lines"], cap)
        data = f.read(cap + 1)
        size = os.fstat(f.fileno()).st_size
    if b"\0" in data[:8192]:
        return {"content": "(a binary file of %d bytes: look into it with a command such as xxd or file)" % size}
    if len(data) <= cap:
        return {"content": data.decode("utf-8", "replace")}
    text = data[:cap].decode("utf-8", "replace")
    return {"content": text + "\n[... file is %d bytes; only the first %d are shown ...]\n" % (size, cap)}


def read_lines(f, lines, cap):
    """Lines first to last (counted from 1, both included) of a text file, at most `cap` bytes of them.
    No line is read whole into memory: a file of one huge line costs `cap` bytes, not its size."""
    first, last = int(lines[0]), int(lines[1])
    kept, size, number = [], 0, 0
    while number < last and size <= cap:
        part = f.readline(cap + 1)
        if not part:
            break
        number += 1
        if number >= first:
            kept.append(part)
            size += len(part)
        while not part.endswith(b"\n") and part:  # the rest of a line longer than the cap: passed over
            part = f.readline(cap + 1)
    data = b"".join(kept)
    if b"\0" in data[:8192]:
        return {"content": "(a binary file: look into it with a command such as xxd or file)"}
    text = data[:cap].decode("utf-8", "replace")
    if not kept:
        return {"content": "(no lines %d to %d: the file has %d lines)" % (first, last, number)}
    return {"content": text + ("\n[... cut at %d bytes ...]\n" % cap if len(data) > cap else "")}


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


class ClientGone(BaseException):
    """The end of the runtime's stdin: the client is gone, and so must be the runtime and everything
    it started, whatever it is doing. A BaseException, so that no handler of a request takes it."""


# The owner's lease, in seconds (none where not given), from the host as the runtime's arguments
# (`--lease SECONDS`, after its bootstrap). An engine keeps the runtime's stdin open while its
# connection to the owner looks open, and a machine gone or a network cut never closes it: so the
# owner says a newline every few seconds, and where nothing came for this long, the runtime ends
# everything it started and itself, and so its container.
LEASE_ARGUMENT = "--lease"


def lease_from_arguments(argv):
    try:
        return max(float(argv[argv.index(LEASE_ARGUMENT) + 1]), 0.0)
    except (ValueError, IndexError):
        return 0.0


class Channel:
    """Where requests come from and where their replies go: the runtime's stdin and stdout and,
    once the client asks for it, a unix socket to the client that skips the relay in between (a
    container engine's). A reply goes back the way its request came. The end of stdin (the client
    gone) ends the runtime, as does silence past the lease; the end of the socket ends only the socket."""

    STDIN = 0

    def __init__(self, lease=0.0):
        self.buffers = {self.STDIN: b""}
        self.sock = None
        self.lease = lease
        self.heard = time.monotonic()
        self.replying = None  # (source, id) of the request being served, for its progress

    def progress(self, text):
        """Says, before the reply, how the request being served goes (a command's latest output)."""
        if self.replying is not None:
            source, rid = self.replying
            self.send(source, json.dumps({"id": rid, "progress": text}).encode() + b"\n")

    def check_lease(self):
        """Raises ClientGone where the owner said nothing for longer than its lease."""
        if self.lease and time.monotonic() - self.heard > self.lease:
            raise ClientGone

    def connect(self, req):
        """Connects to the client's socket at the path given, and introduces itself with the token."""
        if self.sock is not None:
            raise OSError("connected already")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(SHELL_PATIENCE)
            sock.connect(req["path"])
            sock.sendall(req["token"].encode() + b"\n")
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buffers[sock.fileno()] = b""
        return {}

    def drop_socket(self):
        self.buffers.pop(self.sock.fileno(), None)
        self.sock.close()
        self.sock = None

    def send(self, source, data):
        if source == self.STDIN:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif self.sock is not None and source == self.sock.fileno():
            try:
                self.sock.sendall(data)
            except OSError:
                self.drop_socket()

    def take(self, fd):
        """Reads what arrived on one source (raises ClientGone at the end of stdin)."""
        chunk = os.read(fd, 1 << 16)
        if chunk:
            self.buffers[fd] += chunk
            self.heard = time.monotonic()
        elif fd == self.STDIN:
            raise ClientGone
        else:
            self.drop_socket()

    def requests(self):
        """(source, line) pairs, until the end of stdin raises ClientGone; between them, the orphans
        that came to the runtime and died are reaped."""
        while True:
            for fd in list(self.buffers):
                while fd in self.buffers and b"\n" in self.buffers[fd]:
                    line, self.buffers[fd] = self.buffers[fd].split(b"\n", 1)
                    yield fd, line
            ready = select.select(list(self.buffers), [], [], 0.2)[0]
            if not ready:
                reap()
                self.check_lease()
            for fd in ready:
                if fd in self.buffers:  # else dropped meanwhile
                    self.take(fd)


def main():
    become_undumpable()  # before anything a command could reach
    become_subreaper()  # what a command leaves running stays ours, to be found and ended
    check_pidfds()
    # Keeps fds 3 and 4 taken, so that no pipe is ever one of them and a shell's fds are
    # always those it was given.
    os.open(os.devnull, os.O_RDONLY)
    os.open(os.devnull, os.O_RDONLY)
    channel = Channel(lease_from_arguments(sys.argv))
    runtime = Runtime(channel)
    ops = {"run": runtime.run, "read": read, "write": write, "ping": runtime.ping, "socket": channel.connect}
    hello = {"hello": "nanocode-runtime", "version": 1, "pid": os.getpid(), "fallbacks": FALLBACKS}
    hello["shells"] = runtime.folder
    channel.send(Channel.STDIN, json.dumps(hello).encode() + b"\n")
    runtime.prepare()
    try:
        serve(channel, ops)
    except ClientGone:
        runtime.stop_everything()  # a container ends with the runtime, but on the host nothing else would
        remove_folder(runtime.folder)


def serve(channel, ops):
    for source, line in channel.requests():
        if not line.strip():
            continue  # the owner's heartbeat: it holds the lease, and asks nothing
        req = {}
        try:
            req = json.loads(line)
            channel.replying = (source, req.get("id")) if req.get("stream") is True else None
            reply = ops[req["op"]](req)
            reply["ok"] = True
        except NotARegularFile as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            if isinstance(exc, OSError) and exc.strerror:
                reply["error"] = "%s: %s" % (exc.strerror, exc.filename or "")
        reply["id"] = req.get("id") if isinstance(req, dict) else None
        channel.send(source, json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":
    main()
