"""The goal's commits: read from its layer as a `git format-patch` series, applied on the host with `git am`.

Nothing of the sandbox's git configuration is ever read: the series is made in a scratch git folder
that holds only the goal's objects and refs, borrows the project's objects, and has a config of
nanocode's own. On the host, git runs with hooks, fsmonitor and the like turned off.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from nanocode.errors import ApplyError
from nanocode.workspace.changeset import Manifest

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
    "-c", "am.threeWay=false",
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


def series(upper_git: str, project: str, start: dict[str, str], target: Path) -> tuple[list[str], str]:
    """Writes the goal's new commits on the start branch as patches under `target`; returns their names
    and a note for the user ("" when all is well)."""
    if not start.get("start") or not os.path.isdir(upper_git):
        return [], ""
    tip = _tip(upper_git, start["branch"])
    if not tip or tip == start["start"]:
        return [], ""
    with tempfile.TemporaryDirectory(prefix="nanocode-git-") as scratch:
        _scratch(scratch, upper_git, project, start["branch"], tip)
        if git("merge-base", "--is-ancestor", start["start"], tip, git_dir=scratch).returncode != 0:
            return [], f"the goal rewrote the history of {start['branch']}: its commits are not kept"
        target.mkdir(exist_ok=True)
        commits = f"{start['start']}..{tip}"
        made = git("format-patch", "-q", "--no-signature", "-o", str(target), commits, git_dir=scratch)
        if made.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            return [], f"the goal's commits could not be read: {made.stderr.strip()[:200]}"
    return sorted(p.name for p in target.iterdir()), ""


def _tip(upper_git: str, branch: str) -> str:
    loose = os.path.join(upper_git, *branch.split("/"))
    if os.path.isfile(loose) and not os.path.islink(loose):
        text = Path(loose).read_text(errors="replace").strip()
        return text if SHA.match(text) else ""
    packed = os.path.join(upper_git, "packed-refs")
    if os.path.isfile(packed) and not os.path.islink(packed):
        for line in Path(packed).read_text(errors="replace").splitlines():
            sha, _, name = line.partition(" ")
            if name == branch and SHA.match(sha):
                return sha
    return ""


def _scratch(scratch: str, upper_git: str, project: str, branch: str, tip: str) -> None:
    """A git folder of nanocode's own: the goal's objects (regular files only), the project's as alternates."""
    objects = os.path.join(scratch, "objects")
    for folder, dirs, files in os.walk(os.path.join(upper_git, "objects")):
        dirs[:] = [d for d in dirs if d != "info" and not os.path.islink(os.path.join(folder, d))]
        here = os.path.join(objects, os.path.relpath(folder, os.path.join(upper_git, "objects")))
        os.makedirs(here, exist_ok=True)
        for name in files:
            source = os.path.join(folder, name)
            if os.path.isfile(source) and not os.path.islink(source):
                shutil.copyfile(source, os.path.join(here, name))
    os.makedirs(os.path.join(objects, "info"), exist_ok=True)
    Path(objects, "info", "alternates").write_text(os.path.join(project, ".git", "objects") + "\n")
    os.makedirs(os.path.join(scratch, "refs", "heads"), exist_ok=True)
    Path(scratch, "HEAD").write_text(f"ref: {branch}\n")
    Path(scratch, "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
    ref = os.path.join(scratch, *branch.split("/"))
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    Path(ref).write_text(tip + "\n")


class Applier:
    """`git am` of the series on the host, on the branch it was made on; undone with a reset."""

    def __init__(self, manifest: Manifest, folder: Path):
        self.manifest = manifest
        self.folder = folder
        self.before = ""

    def apply(self) -> None:
        project, branch = self.manifest.project, self.manifest.git.get("branch", "")
        now = start_point(project)
        if now.get("branch") != branch:
            raise ApplyError(f"nothing applied: the commits are for {branch}, and the project is on another branch")
        self.before = now["start"]
        patches = [str(self.folder / "series" / name) for name in self.manifest.series]
        done = git("am", "-q", "--no-3way", *patches, cwd=project, extra=_committer(project))
        if done.returncode != 0:
            git("am", "--abort", cwd=project)
            raise ApplyError(f"nothing applied: git am refused the goal's commits: {_first(done.stderr)}")

    def undo(self) -> list[str]:
        done = git("reset", "-q", "--keep", self.before, cwd=self.manifest.project)
        return [] if done.returncode == 0 else [f"git reset --keep {self.before}: {_first(done.stderr)}"]


def _committer(project: str) -> dict[str, str]:
    """Where the host has no identity for git, the commits are committed by nanocode (authors kept)."""
    if git("var", "GIT_COMMITTER_IDENT", cwd=project).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "nanocode", "GIT_COMMITTER_EMAIL": "nanocode@localhost"}


def _first(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"
