"""The goal's commits: read from its layer as a git bundle, applied on the host as the history they are.

Nothing of the sandbox's git configuration is ever read: the goal's objects are copied out of its
layer through folder handles (`gitlayer`) into a scratch git folder that borrows the project's
objects and has a config of nanocode's own; the commits from the start to the goal's tip of the
start branch are kept as a bundle. On the host, git (hooks, fsmonitor and the like turned off)
fetches the bundle with its objects checked, moves the branch from the start to the tip (only if it
is still at the start) and sets the index; it never writes the working tree, which is the change
set's alone. A history the goal rewrote (amend, rebase, reset) is said so, and applied as it is.
"""

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nanocode.errors import ApplyError
from nanocode.workspace.changeset import Manifest
from nanocode.workspace.gitlayer import GitLayer, Replaced, Upper

BRANCH = re.compile(r"^ref: (refs/heads/[A-Za-z0-9._/-]+)\s*$")
SHA = re.compile(r"^[0-9a-f]{40}$")
# What stops git on the host from running anything a project or its config names.
SAFE = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.untrackedCache=false",
    "-c", "core.sshCommand=false",
    "-c", "diff.external=",
    "-c", "commit.gpgSign=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip


def git(
    *args: str, cwd: str | None = None, git_dir: str | None = None, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", **(extra or {})}
    if git_dir:
        env |= {"GIT_DIR": git_dir, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *SAFE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def start_point(project: str) -> dict[str, str]:
    """The branch checked out at the start and its commit; empty without a plain .git folder or a branch."""
    head = os.path.join(project, ".git", "HEAD")
    if not os.path.isdir(os.path.join(project, ".git")) or os.path.islink(os.path.join(project, ".git")):
        return {}
    try:
        match = BRANCH.match(Path(head).read_text())
    except (OSError, UnicodeDecodeError):
        return {}
    if not match:
        return {}
    done = git("rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=project)
    if done.returncode != 0:
        return {"branch": match.group(1), "start": ""}
    return {"branch": match.group(1), "start": done.stdout.strip()}


BUNDLE = "series.bundle"
LOG = "series.log"


@dataclass
class Series:
    """The goal's commits on the start branch, as read from its layer."""

    commits: list[str] = field(default_factory=list)  # one line each, oldest first: short id and subject
    tip: str = ""
    bundle: str = ""  # under the change set's folder; "" when the host has every commit already
    paths: list[str] = field(default_factory=list)  # what the commits change, start to tip
    note: str = ""  # for the user: a rewritten history, a replaced repository, a series that cannot be read


def series(upper: Upper, project: str, start: dict[str, str], folder: Path) -> Series:
    """The goal's commits on the start branch, kept under `folder`; none when the layer's .git is not to
    be read (the note says why)."""
    if not start.get("start"):
        return Series()
    try:
        with GitLayer(upper) as layer:
            tip = _tip(layer, start["branch"]) if layer.present else ""
            if not tip or tip == start["start"]:
                return Series()
            with tempfile.TemporaryDirectory(prefix="nanocode-git-") as scratch:
                _scratch(scratch, layer, project, start["branch"], tip)
                return _describe(scratch, start, tip, folder)
    except Replaced as exc:
        return Series(note=f"the goal replaced its repository ({exc}): nothing of it was read, its commits not kept")


def _tip(layer: GitLayer, branch: str) -> str:
    loose = layer.read(branch)
    if loose is not None:
        return loose.strip() if SHA.match(loose.strip()) else ""
    for line in (layer.read("packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name == branch and SHA.match(sha):
            return sha
    return ""


def _scratch(scratch: str, layer: GitLayer, project: str, branch: str, tip: str) -> None:
    """A git folder of nanocode's own: the goal's objects (regular files only), the project's as alternates."""
    objects = Path(scratch, "objects")
    layer.copy_objects(objects)
    (objects / "info").mkdir(parents=True, exist_ok=True)
    (objects / "info" / "alternates").write_text(os.path.join(project, ".git", "objects") + "\n")
    Path(scratch, "refs", "heads").mkdir(parents=True, exist_ok=True)
    Path(scratch, "HEAD").write_text(f"ref: {branch}\n")
    Path(scratch, "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
    ref = Path(scratch, *branch.split("/"))
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(tip + "\n")


def _describe(scratch: str, start: dict[str, str], tip: str, folder: Path) -> Series:
    branch, base = start["branch"], start["start"]
    if git("cat-file", "-e", f"{tip}^{{commit}}", git_dir=scratch).returncode != 0:
        return Series(note=f"the goal's commits on {branch} could not be read: they are not kept")
    new = _lines(git("log", "--reverse", "--format=%h %s", tip, f"^{base}", git_dir=scratch))
    gone = _lines(git("rev-list", base, f"^{tip}", git_dir=scratch))
    found = Series(commits=new, tip=tip, paths=_changed(scratch, base, tip))
    if gone:
        found.note = (
            f"the goal rewrote the history of {branch}: {len(gone)} commit(s) of it replaced by {len(new)}; "
            f"applying moves {branch} to the goal's {tip[:12]} (the old commits stay in its reflog)"
        )
    if new:
        made = git("bundle", "create", "-q", str(folder / BUNDLE), branch, f"^{base}", git_dir=scratch)
        if made.returncode != 0:
            return Series(note=f"the goal's commits could not be read: {_first(made.stderr)}")
        found.bundle = BUNDLE
        shown = "--format=commit %H%nAuthor: %an <%ae>%n%n    %s"
        log = git("log", "--stat", shown, tip, f"^{base}", git_dir=scratch)
        (folder / LOG).write_text(log.stdout, encoding="utf-8")
    return found


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _changed(scratch: str, base: str, tip: str) -> list[str]:
    done = git("diff", "--name-only", "-z", "--no-renames", base, tip, git_dir=scratch)
    return [name for name in done.stdout.split("\0") if name] if done.returncode == 0 else []


class History:
    """The goal's commits applied on the host: the branch moved from the start to the tip, the index set;
    undone by moving both back."""

    def __init__(self, manifest: Manifest, folder: Path):
        self.manifest = manifest
        self.folder = folder
        self.project = manifest.project
        self.branch = manifest.git.get("branch", "")
        self.start = manifest.git.get("start", "")
        self.tip = manifest.git.get("tip", "")
        self.index: bytes | None = None
        self.moved = False

    @property
    def active(self) -> bool:
        return bool(self.tip) and self.tip != self.start

    def check(self) -> list[str]:
        """What stops the commits from applying (nothing when there are none)."""
        if not self.active:
            old = self.manifest.series and not self.tip
            return [f"{self.branch}: this change set's commits were kept by an older nanocode"] if old else []
        now = start_point(self.project)
        if now.get("branch") != self.branch:
            return [f"{self.branch}: the commits are for {self.branch}, and the project is on another branch"]
        if now.get("start") != self.start:
            return [f"{self.branch}: it moved since the goal started ({self.start[:12]} is now {now['start'][:12]})"]
        if git("diff-index", "--cached", "--quiet", "HEAD", "--", cwd=self.project).returncode != 0:
            return [f"{self.branch}: the project's index holds staged changes (commit or unstage them first)"]
        return []

    def apply(self) -> None:
        if not self.active:
            return
        bundle = self.manifest.git.get("bundle", "")
        if bundle:
            fetch = ("-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags", "--no-write-fetch-head")
            self._run(*fetch, str(self.folder / bundle), self.branch, what="git fetch refused the goal's commits")
        message = f"nanocode: apply change set {self.manifest.id}"
        self._run("update-ref", "-m", message, self.branch, self.tip, self.start, what="the branch could not move")
        self.moved = True
        self.index = self._index().read_bytes() if self._index().is_file() else None
        self._run("read-tree", "-m", self.start, self.tip, what="the index could not be set")

    def undo(self) -> list[str]:
        failed = []
        if self.index is not None:
            try:
                _write_atomically(self._index(), self.index)
            except OSError as exc:
                failed.append(f"the index: {exc}")
        if self.moved:
            done = git("update-ref", self.branch, self.start, self.tip, cwd=self.project)
            if done.returncode != 0:
                failed.append(f"git update-ref {self.branch} {self.start}: {_first(done.stderr)}")
        return failed

    def _index(self) -> Path:
        return Path(self.project, ".git", "index")

    def _run(self, *args: str, what: str) -> None:
        done = git(*args, cwd=self.project, extra=_committer(self.project))
        if done.returncode != 0:
            raise ApplyError(f"nothing applied: {what}: {_first(done.stderr)}")


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".nanocode")
    part.write_bytes(data)
    os.replace(part, path)


def _committer(project: str) -> dict[str, str]:
    """Where the host has no identity for git, the reflog names nanocode."""
    if git("var", "GIT_COMMITTER_IDENT", cwd=project).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "nanocode", "GIT_COMMITTER_EMAIL": "nanocode@localhost"}


def _first(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"
