"""The steps of an apply, each made through folder handles, each with its undo.

New contents are staged in a folder of nanocode's inside the project (so that placing them is a
rename), the project's old paths are moved into it, and the new ones renamed into place. Every
step names its path relative to a handle (`handles.Tree`), never through a symlink; undoing a step
takes the same way back.
"""

import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from nanocode.workspace.handles import FOLDER, Tree

CHUNK = 1 << 20
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Transaction:
    """What was done, in order, so that it can be undone."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.stage = f".nanocode-apply-{secrets.token_hex(6)}"
        self.stage_fd = -1
        self.undo: list[Callable[[], None]] = []
        self.count = 0
        self.contents: dict[str, str] = {}  # path -> the name of its new content in the stage

    def open(self) -> None:
        os.mkdir(self.stage, 0o700, dir_fd=self.tree.fd)
        self.stage_fd = self.tree.folder(self.stage)

    def close(self, keep: bool = False) -> None:
        """Closes the stage, and removes it unless `keep` (it holds what could not be put back)."""
        if self.stage_fd >= 0:
            os.close(self.stage_fd)
            self.stage_fd = -1
        if not keep:
            shutil.rmtree(self.stage, dir_fd=self.tree.fd, ignore_errors=True)

    def _name(self) -> str:
        self.count += 1
        return str(self.count)

    def stage_file(self, path: str, source: Path, mode: int) -> None:
        name = self._name()
        fd = os.open(name, NEW_FILE, 0o600, dir_fd=self.stage_fd)
        try:
            with open(source, "rb") as src, open(fd, "wb", closefd=False) as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        self.contents[path] = name

    def stage_link(self, path: str, target: str) -> None:
        name = self._name()
        os.symlink(target, name, dir_fd=self.stage_fd)
        self.contents[path] = name

    def put_aside(self, path: str) -> None:
        """Moves the project's `path` into the stage (a folder, already emptied, is removed)."""
        st = self.tree.lstat(path)
        if st is None:
            return
        with self.tree.at(path) as (folder, name):
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=folder)  # its contents went first; a file the user added stops it here
                mode = stat.S_IMODE(st.st_mode)
                self.undo.append(lambda: self._mkdir(path, mode))
                return
            aside = self._name()
            os.replace(name, aside, src_dir_fd=folder, dst_dir_fd=self.stage_fd)
        self.undo.append(lambda: self._place(aside, path))

    def make_folder(self, path: str) -> None:
        st = self.tree.lstat(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            return
        self._mkdir(path, 0o755)
        self.undo.append(lambda: self._rmdir(path))

    def place(self, path: str) -> None:
        self._place(self.contents[path], path)
        self.undo.append(lambda: self._unlink(path))

    def chmod(self, path: str, mode: int) -> None:
        with self.tree.open_file(path) as fd:
            old = stat.S_IMODE(os.fstat(fd).st_mode)
            os.fchmod(fd, mode)
        self.undo.append(lambda: self._chmod_back(path, old))

    def rollback(self) -> list[str]:
        failed = []
        for step in reversed(self.undo):
            try:
                step()
            except OSError as exc:
                failed.append(str(exc))
        return failed

    def _mkdir(self, path: str, mode: int) -> None:
        with self.tree.at(path) as (folder, name):
            os.mkdir(name, 0o700, dir_fd=folder)
            made = os.open(name, FOLDER, dir_fd=folder)
            try:
                os.fchmod(made, mode)
            finally:
                os.close(made)

    def _rmdir(self, path: str) -> None:
        with self.tree.at(path) as (folder, name):
            os.rmdir(name, dir_fd=folder)

    def _place(self, staged: str, path: str) -> None:
        with self.tree.at(path) as (folder, name):
            os.replace(staged, name, src_dir_fd=self.stage_fd, dst_dir_fd=folder)

    def _unlink(self, path: str) -> None:
        with self.tree.at(path) as (folder, name):
            os.unlink(name, dir_fd=folder)

    def _chmod_back(self, path: str, mode: int) -> None:
        with self.tree.open_file(path) as fd:
            os.fchmod(fd, mode)
