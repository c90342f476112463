"""@debian for an ordinary user on a rootful engine, against the real Debian mirror: nanocode runs as
uid 1000 (with the Docker socket's group, a HOME of its own). In overlay mode the commands run as
root in the container, with no capability, so `apt-get install` works over http and over https
with the host's CA; the project is sent as root's and comes back as the user's: nothing root-owned
lands in it, nothing is left behind. In bind mode they keep the user's uid, and a line says so."""

import functools
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode.prompts import MARKER
from nanocode.workspace import remote
from tests.scripted_api import ScriptedAPI, call, message, text, tools

pytestmark = pytest.mark.usefixtures("sandbox_image")

UID = 1000
SOCKET = "/var/run/docker.sock"
SOURCES = "-o Dir::Etc::SourceList=/tmp/{name}.list -o Dir::Etc::SourceParts=/nonexistent"
APT = (
    "echo 'deb {scheme}://deb.debian.org/debian bookworm main' > /tmp/{name}.list && "
    f"apt-get -qq {SOURCES} update && apt-get -qq {SOURCES} install -y --no-install-recommends {{package}} >/dev/null"
)
COMMANDS = [
    "id -u; grep CapEff /proc/self/status",
    APT.format(scheme="http", name="http", package="jq") + " && jq --version",
    APT.format(scheme="https", name="https", package="hello") + " && hello",
    # The goal's own files, as root in the container: a new folder, a private file, a script, a change.
    "mkdir -p made && jq -n 1 > made/one && echo secret > made/private && chmod 600 made/private "
    "&& printf '#!/bin/sh\\n' > run.sh && chmod 755 run.sh && echo more >> README && ls -ln made "
    "&& git add -A && git -c user.name=m -c user.email=m@x commit -qm made",
]


@pytest.fixture
def home() -> Iterator[Path]:
    """A folder of the user's own (pytest's are root's alone), holding the project, HOME and state."""
    if os.getuid() != 0 or not os.path.exists(SOCKET) or os.environ.get("DOCKER_HOST"):
        pytest.skip("needs root to become another user, and the engine on its local socket")
    if _reach() is None:
        pytest.skip(f"uid {UID} cannot run {sys.executable} with nanocode, even allowed to read every file")
    folder = Path(tempfile.mkdtemp(prefix="nanocode-as-user-"))
    os.chmod(folder, 0o755)
    os.chown(folder, UID, UID)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# A checkout the user cannot read (a clone in a 0700 folder, under /root) runs with leave to read every
# file, and only that: what the user's nanocode makes is still theirs alone.
READ_ALL = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@functools.cache
def _reach() -> list[str] | None:
    """What uid UID needs, beyond itself, to run the checkout's nanocode; None: it cannot."""
    for extra in ([], READ_ALL):
        user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *extra]
        if (
            subprocess.run([*user, sys.executable, "-c", "import nanocode"], cwd="/", capture_output=True).returncode
            == 0
        ):
            return extra
    return None


def _as_user(folder: Path, *args: str, api: ScriptedAPI | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE"))}
    env |= {"HOME": str(folder), "USER": "dev", "LOGNAME": "dev", "XDG_STATE_HOME": str(folder / "state")}
    env |= {"OPENROUTER_API_KEY": "sk-test", "INFERENCE_BASE_URL": api.url} if api else {}
    env.pop("XDG_RUNTIME_DIR", None)
    user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", f"--groups={os.stat(SOCKET).st_gid}", *(_reach() or [])]
    return subprocess.run(
        [*user, sys.executable, "-m", "nanocode", *args],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _project(folder: Path) -> Path:
    """A git repository the user made."""
    project = folder / "project"
    _user(folder, "mkdir", str(project))
    _user(project, "sh", "-c", "echo start > README")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "start"]):
        _user(project, "git", *GIT, *args)
    return project


GIT = ["-c", "user.name=t", "-c", "user.email=t@x", "-c", "init.defaultBranch=main"]


def _user(cwd: Path, *command: str) -> str:
    user = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run([*user, *command], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _owners(project: Path) -> set[int]:
    found = {os.lstat(project).st_uid}
    for folder, dirs, files in os.walk(project):
        found |= {os.lstat(os.path.join(folder, name)).st_uid for name in dirs + files}
    return found


def _ours(docker_engine: Any, project: Path) -> list[str]:
    label = {"label": f"nanocode.project={project}"}
    rows = docker_engine.api.containers(all=True, filters=label)
    volumes = [v["Name"] for v in docker_engine.api.volumes(filters=label).get("Volumes") or []]
    return [r["Id"] for r in rows] + volumes + [n["Name"] for n in docker_engine.api.networks(filters=label)]


def test_an_ordinary_user_installs_with_apt_in_overlay_mode_and_gets_back_only_their_own_files(
    docker_engine: Any, api: ScriptedAPI, home: Path
) -> None:
    project = _project(home)
    api.add(*[tools(call("shell", {"command": command})) for command in COMMANDS], message(f"{MARKER} done"))
    overlay = ["--workspace", "overlay", "--apply"]
    done = _as_user(
        home, "--sandbox", *overlay, "--allow-host", "@debian", "-p", "g", "--project", str(project), api=api
    )
    assert done.returncode == 0, done.stderr
    assert "sandbox: commands run as root in the container, with no capability" in done.stderr
    who, http, https, made = [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"]
    assert who.split() == ["0", "CapEff:", "0000000000000000"], who
    assert "jq-1.6" in http.splitlines() and "W: " not in http, http
    assert "Hello, world!" in https.splitlines(), https
    assert " 0 0 " in made  # root's in the container
    system = text(api.requests[0]["messages"][0])
    assert "as root (uid 0), with no capability, so that apt-get install works" in system
    # Applied on the host by nanocode, as the user: their files, git's modes.
    assert (project / "README").read_text() == "start\nmore\n"
    assert (project / "made" / "one").read_text() == "1\n" and (project / "made" / "private").read_text() == "secret\n"
    assert stat.S_IMODE(os.stat(project / "run.sh").st_mode) == 0o755
    assert _user(project, "git", "log", "--format=%s").split() == ["made", "start"]
    assert _user(project, "git", "status", "--porcelain") == ""
    assert _owners(project) == {UID}  # .git's new objects too
    layers = home / "state" / "nanocode" / "layers"
    assert not (layers.is_dir() and any(layers.iterdir())), "a workspace layer was left behind"
    assert _ours(docker_engine, project) == []


def test_in_bind_mode_the_commands_keep_the_users_uid_and_a_line_says_why_apt_cannot_install(
    docker_engine: Any, api: ScriptedAPI, home: Path
) -> None:
    project = _project(home)
    api.add(tools(call("shell", {"command": "id -u; touch made"})), message(f"{MARKER} done"))
    done = _as_user(home, "--sandbox", "--allow-host", "@debian", "-p", "g", "--project", str(project), api=api)
    assert done.returncode == 0, done.stderr
    assert "apt-get install needs root in it and commands run as uid 1000 in bind mode" in done.stderr
    assert "--workspace overlay runs them as root" in done.stderr
    assert [text(m) for m in api.requests[-1]["messages"] if m["role"] == "tool"] == [f"{UID}\n"]
    assert _owners(project) == {UID}
    assert _ours(docker_engine, project) == []


@given(
    st.dictionaries(
        st.text(alphabet="abc.-_", min_size=1, max_size=6).filter(lambda n: n not in (".", "..")),
        st.tuples(st.sampled_from([0o600, 0o644, 0o755, 0o4755, 0o700]), st.booleans()),
        max_size=8,
    ),
    st.tuples(st.integers(0, 70000), st.integers(0, 70000)),
)
@settings(max_examples=40, deadline=None)
def test_the_project_is_sent_owned_by_the_sandboxs_user_whatever_its_files(
    files: dict[str, tuple[int, bool]], owner: tuple[int, int]
) -> None:
    """The invariant of shipping: every member belongs to the user the sandbox runs as, by number."""
    with tempfile.TemporaryDirectory() as folder:
        for name, (mode, is_folder) in files.items():
            path = Path(folder, name)
            path.mkdir() if is_folder else path.write_text(name)
            path.chmod(mode | 0o700 if is_folder else mode)  # a folder its owner may walk
        out = io.BytesIO()
        remote.project_tar(folder, out, owner)
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
            members = tar.getmembers()
    assert {m.name for m in members} == set(files)
    assert all((m.uid, m.gid, m.uname, m.gname) == (*owner, "", "") for m in members)
