"""The goal's commits applied on the host, as the history they are; never through the working tree.

git (hooks, fsmonitor and the like turned off) fetches the change set's bundle with its objects
checked, moves the branch from where it is to the goal's tip (only if it is still where it was
seen), and sets the index; the working tree is the change set's alone (`apply`). When the branch
moved on since the goal started (another change set applied first, say) and the goal only added
commits, they are made again on top of it, each commit's change applied to a scratch index, as a
rebase would, without touching the working tree; a history the goal rewrote is applied only where
it was made. Undone by moving the branch and the index back.
"""

import os
import tempfile
from pathlib import Path

from nanocode.errors import ApplyError
from nanocode.workspace.changeset import Manifest
from nanocode.workspace.gitseries import NO_COMMIT, committer, first_line, git, lines, start_point


class History:
    def __init__(self, manifest: Manifest, folder: Path):
        self.manifest = manifest
        self.folder = folder
        self.project = manifest.project
        self.branch = manifest.git.get("branch", "")
        self.start = manifest.git.get("start", "")
        self.tip = manifest.git.get("tip", "")
        self.head = ""  # where the branch is when applying
        self.target = ""  # where it goes
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
        self.head = now["start"]
        if self.head != self.start and not self._can_replay():
            return [f"{self.branch}: it moved since the goal started ({self.start[:12]} is now {self.head[:12]})"]
        if self._staged():
            return [f"{self.branch}: the project's index holds staged changes (commit or unstage them first)"]
        return []

    def _staged(self) -> bool:
        if not self.head:  # no commit yet: anything in the index is staged
            return bool(lines(git("ls-files", "--cached", cwd=self.project)))
        return git("diff-index", "--cached", "--quiet", "HEAD", "--", cwd=self.project).returncode != 0

    def _can_replay(self) -> bool:
        """The branch only moved forward, and the goal only added commits: they can go on top."""
        if self.manifest.git.get("rewritten") or not self.head:
            return False
        return git("merge-base", "--is-ancestor", self.start, self.head, cwd=self.project).returncode == 0

    def apply(self) -> None:
        if not self.active:
            return
        bundle = self.manifest.git.get("bundle", "")
        if bundle:
            fetch = ("-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags", "--no-write-fetch-head")
            self._run(*fetch, str(self.folder / bundle), self.branch, what="git fetch refused the goal's commits")
        self.target = self.tip if self.head == self.start else self._replay()
        message = f"nanocode: apply change set {self.manifest.id}"
        old = self.head or NO_COMMIT
        self._run("update-ref", "-m", message, self.branch, self.target, old, what="the branch could not move")
        self.moved = True
        self.index = self._index().read_bytes() if self._index().is_file() else None
        if self.head:
            # read-tree -m trusts the index's stat data, which a copy, a restore or a chown of the project
            # makes stale though no file changed; the project is still the user's own at this point.
            git("update-index", "-q", "--refresh", cwd=self.project)
        trees = ("-m", self.head, self.target) if self.head else (self.target,)
        self._run("read-tree", *trees, what="the index could not be set")

    def undo(self) -> list[str]:
        failed = []
        try:
            if self.index is not None:
                _write_atomically(self._index(), self.index)
            elif self.moved:
                self._index().unlink(missing_ok=True)  # there was none
        except OSError as exc:
            failed.append(f"the index: {exc}")
        if self.moved:
            back = (
                ("update-ref", self.branch, self.head, self.target) if self.head else ("update-ref", "-d", self.branch)
            )
            done = git(*back, cwd=self.project)
            if done.returncode != 0:
                failed.append(f"git update-ref {self.branch} {self.head or '-d'}: {first_line(done.stderr)}")
        return failed

    def _replay(self) -> str:
        """The goal's commits made again on the branch as it is now; returns the new tip."""
        span = f"{self.start}..{self.tip}"
        if lines(git("rev-list", "--merges", span, cwd=self.project)):
            raise ApplyError(
                f"nothing applied: {self.branch} moved since the goal started, and its commits hold a merge"
            )
        current = self.head
        with tempfile.TemporaryDirectory(prefix="nanocode-index-") as scratch:
            index = {"GIT_INDEX_FILE": os.path.join(scratch, "index")}
            for commit in lines(git("rev-list", "--reverse", span, cwd=self.project)):
                current = self._again(commit, current, index)
        return current

    def _again(self, commit: str, parent: str, index: dict[str, str]) -> str:
        what = f"the goal's commit {commit[:12]} does not apply on {self.branch} as it is now"
        self._run("read-tree", parent, what=what, extra=index)
        patch = git(
            "diff-tree", "-p", "--binary", "--full-index", "--no-renames", f"{commit}^", commit, cwd=self.project
        )
        self._run("apply", "--cached", "--binary", what=what, extra=index, given=patch.stdout)
        tree = self._run("write-tree", what=what, extra=index)
        name, email, date, message = git(
            "log", "-1", "--format=%an%x00%ae%x00%aD%x00%B", commit, cwd=self.project
        ).stdout.split("\0", 3)
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        return self._run("commit-tree", tree, "-p", parent, "-F", "-", what=what, extra=author, given=message)

    def _index(self) -> Path:
        return Path(self.project, ".git", "index")

    def _run(self, *args: str, what: str, extra: dict[str, str] | None = None, given: str | None = None) -> str:
        environment = committer(self.project) | (extra or {})
        done = git(*args, cwd=self.project, extra=environment, given=given)
        if done.returncode != 0:
            raise ApplyError(f"nothing applied: {what}: {first_line(done.stderr)}")
        return done.stdout.strip()


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".nanocode")
    part.write_bytes(data)
    os.replace(part, path)
