"""The goal's commits: read from its layer as a git bundle, and git run safely on the host.

Nothing of the sandbox's git configuration is ever read: the goal's objects are copied out of its
layer through folder handles (`gitlayer`) into a scratch git folder that borrows the project's
objects and has a config of nanocode's own; the commits from the start to the goal's tip of the
start branch are kept as a bundle, which `history` applies. A history the goal rewrote (amend,
rebase, reset) is said so.
"""

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
    *args: str,
    cwd: str | None = None,
    git_dir: str | None = None,
    extra: dict[str, str] | None = None,
    given: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """git, run safely; bytes that are not text pass through unchanged (surrogateescape)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", **(extra or {})}
    if git_dir:
        env |= {"GIT_DIR": git_dir, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(
        ["git", *SAFE, *args],
        cwd=cwd,
        env=env,
        input=given,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=120,
    )


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
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's own name for a tree with nothing in it
NO_COMMIT = "0" * 40  # to update-ref: the branch must not exist
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
    if not start.get("branch"):
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
    branch, base = start["branch"], start["start"]  # no base: the branch had no commit yet
    if git("cat-file", "-e", f"{tip}^{{commit}}", git_dir=scratch).returncode != 0:
        return Series(note=f"the goal's commits on {branch} could not be read: they are not kept")
    since = [f"^{base}"] if base else []
    new = lines(git("log", "--reverse", "--format=%h %s", tip, *since, git_dir=scratch))
    gone = lines(git("rev-list", base, f"^{tip}", git_dir=scratch)) if base else []
    found = Series(commits=new, tip=tip, paths=_changed(scratch, base or EMPTY_TREE, tip))
    if gone:
        found.note = (
            f"the goal rewrote the history of {branch}: {len(gone)} commit(s) of it replaced by {len(new)}; "
            f"applying moves {branch} to the goal's {tip[:12]} (the old commits stay in its reflog)"
        )
    if new:
        made = git("bundle", "create", "-q", str(folder / BUNDLE), branch, *since, git_dir=scratch)
        if made.returncode != 0:
            return Series(note=f"the goal's commits could not be read: {first_line(made.stderr)}")
        found.bundle = BUNDLE
        shown = "--format=commit %H%nAuthor: %an <%ae>%n%n    %s"
        log = git("log", "--stat", shown, tip, *since, git_dir=scratch)
        (folder / LOG).write_text(log.stdout, encoding="utf-8")
    return found


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _changed(scratch: str, base: str, tip: str) -> list[str]:
    done = git("diff", "--name-only", "-z", "--no-renames", base, tip, git_dir=scratch)
    return [name for name in done.stdout.split("\0") if name] if done.returncode == 0 else []


def committer(project: str) -> dict[str, str]:
    """Where the host has no identity for git, the reflog names nanocode."""
    if git("var", "GIT_COMMITTER_IDENT", cwd=project).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "nanocode", "GIT_COMMITTER_EMAIL": "nanocode@localhost"}


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"
