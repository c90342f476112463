"""Engines that cannot see the project (a remote engine, a VM whose paths are not shared).

Whether an engine sees the project is found out, not guessed: a marker file is put in the project
and a container made (never started) with the project's folder bind-mounted looks for it.

Where it cannot, overlay mode ships the project through the engine's API: a tar stream into a
volume (masked secrets left out), which becomes the lower folder of an overlay volume on the
engine, as the project is on a local one. The upper folder comes back the same way when the goal
ends, with the list of opaque folders from a small helper that reads overlayfs's marks.
"""

import contextlib
import io
import os
import secrets
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from nanocode.errors import ConfigError
from nanocode.sandbox import protect
from nanocode.sandbox.container import NO_NEW_PRIVILEGES, owner_labels
from nanocode.workspace.handles import FOLDER, Beyond, Tree
from nanocode.workspace.transaction import NEW_FILE

CHUNK = 1 << 20
_seen: dict[tuple[str, str], bool] = {}

# Run by the helper when the goal ends: the folders overlayfs marked opaque, NUL-separated. A folder
# it cannot read ends it with status 3, as a change set missing a folder made anew would keep, when
# applied, the old folder's files the goal deleted.
OPAQUE_LISTER = """
import os, sys
def refuse(error):
    sys.stderr.write(str(error))
    sys.exit(3)
top = "/upper/u"
for folder, dirs, files in os.walk(top, onerror=refuse):
    try:
        marked = os.getxattr(folder, "user.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        marked = False  # no such mark
    if marked:
        sys.stdout.write(os.path.relpath(folder, top) + "\\0")
"""
# Whatever modes the goal left in its upper, the helper reads it whole (and may change nothing).
READ_ALL = ["DAC_READ_SEARCH"]


def sees_project(client: docker.DockerClient, project: str, image: str) -> bool:
    """True when a container on this engine would find the project's files at the project's path."""
    key = (str(client.api.base_url), project)
    if key not in _seen:
        _seen[key] = _probe(client, project, image)
    return _seen[key]


PROBE_MARKER = ".nanocode-probe-"


def _probe(client: docker.DockerClient, project: str, image: str) -> bool:
    marker = os.path.join(project, f"{PROBE_MARKER}{secrets.token_hex(8)}")
    try:
        Path(marker).write_bytes(b"")
    except OSError:
        return True  # a project nanocode cannot write to: taken as seen, and a bind mount will say otherwise
    name, container_id, cut_off = f"nanocode-probe-{secrets.token_hex(6)}", None, True
    try:
        mount = Mount(target="/probe", source=project, type="bind", read_only=True)
        container_id = client.api.create_container(
            image,
            command="true",
            name=name,
            # Labelled like a goal's: one that an interrupt left behind goes with the next start's clean-up.
            labels=owner_labels("probe", project),
            host_config=client.api.create_host_config(mounts=[mount], network_mode="none"),
        )["Id"]
        cut_off = False
        stream, _ = client.api.get_archive(container_id, "/probe/" + os.path.basename(marker))
        for _ in stream:
            pass
        return True
    except ImageNotFound:
        cut_off = False
        raise ConfigError(f"the sandbox image {image} is not present") from None
    except (APIError, NotFound):
        cut_off = False
        return False
    except DockerException as exc:
        cut_off = False
        raise ConfigError(f"cannot ask the Docker engine whether it sees {project}: {exc}") from None
    finally:
        os.unlink(marker)
        _remove_probe(client, container_id or name, cut_off)


def _remove_probe(client: docker.DockerClient, container: str, cut_off: bool) -> None:
    """A create cut off by an interrupt before the engine answered may still make the container there:
    it is waited for (by its name) a moment before it is removed."""
    deadline = time.monotonic() + (2.0 if cut_off else 0.0)
    while True:
        try:
            client.api.remove_container(container, force=True, v=True)
            return
        except NotFound:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)
        except DockerException:
            return


def project_tar(project: str, out: IO[bytes], owner: tuple[int, int] | None = None) -> None:
    """The project as a tar stream, members relative to it; secrets and special files left out;
    every member owned by `owner` (uid, gid) where given: the user the sandbox runs as."""
    own = _owned_by(owner) if owner else None
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for folder, dirs, files in os.walk(project):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # gone while the project was walked (another goal's probe marker, say)
                if stat.S_ISREG(st.st_mode) and (protect.is_secret(name) or name.startswith(PROBE_MARKER)):
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                tar.add(path, arcname=os.path.relpath(path, project), recursive=False, filter=own)


def _owned_by(owner: tuple[int, int]) -> Callable[[tarfile.TarInfo], tarfile.TarInfo]:
    def own(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.uid, member.gid = owner
        member.uname = member.gname = ""
        return member

    return own


def streamed(project: str, owner: tuple[int, int] | None = None) -> Iterator[bytes]:
    """The project's tar, made in a thread as it is sent."""
    read, write = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write, "wb", buffering=CHUNK) as out:
                project_tar(project, out, owner)
        except BaseException as exc:  # told after the stream ends
            failure.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    with os.fdopen(read, "rb", buffering=0) as source:
        while chunk := source.read(CHUNK):
            yield chunk
    thread.join()
    if failure:
        raise ConfigError(f"cannot send the project to the engine: {failure[0]}")


def layer_tar(uid: int, gid: int, mode: int) -> bytes:
    """The upper and work folders, made on the engine's side, the upper owned like the project."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, folder_mode in (("u", mode), ("w", 0o700)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, folder_mode, uid, gid
            tar.addfile(info)
    return buffer.getvalue()


class RemoteUpper:
    """The upper folder brought back: extracted here, with overlayfs's marks kept aside."""

    def __init__(self, root: str):
        self.root = root
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()

    def is_whiteout(self, path: str, st: os.stat_result) -> bool:
        return path in self.whiteouts

    def is_opaque(self, path: str) -> bool:
        return path in self.opaque

    def extract(self, stream: Iterator[bytes], top: str) -> None:
        """Extracts the archive of `top` (the upper folder); names that leave it are dropped, and every
        member is made through folder handles: nothing lands through a symlink an earlier member made."""
        reader = _Reader(stream)
        with Tree(self.root) as tree, tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                name = _inside(member.name, top)
                if name:
                    with contextlib.suppress(Beyond, FileNotFoundError, FileExistsError):
                        self._one(tar, member, tree, name)

    def _one(self, tar: tarfile.TarFile, member: tarfile.TarInfo, tree: Tree, name: str) -> None:
        with tree.at(name) as (folder, last):
            if member.isdir():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(last, 0o700, dir_fd=folder)
                made = os.open(last, FOLDER, dir_fd=folder)
                try:
                    os.fchmod(made, 0o700 | (member.mode & 0o7777))
                finally:
                    os.close(made)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                _write(folder, last, source, member.mode & 0o7777)
            elif member.issym():
                os.symlink(member.linkname, last, dir_fd=folder)
            elif member.ischr() and member.devmajor == 0 and member.devminor == 0:
                _write(folder, last, io.BytesIO(b""), 0o600)
                self.whiteouts.add(os.path.join(self.root, name))


def _inside(member: str, top: str) -> str:
    """The member's path below `top`; "" when it is not one, or names a way out."""
    name = member.removeprefix("./")
    name = name[len(top) :].lstrip("/") if name == top or name.startswith(top + "/") else ""
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        return ""
    return name


def _write(folder: int, name: str, source: IO[bytes], mode: int) -> None:
    fd = os.open(name, NEW_FILE, 0o600, dir_fd=folder)
    try:
        with open(fd, "wb", closefd=False) as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class _Reader:
    """A file-like object over a stream of chunks, for tarfile's stream mode."""

    def __init__(self, stream: Iterator[bytes]):
        self.stream = stream
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.stream, b"")
            if not chunk:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def helper(client: docker.DockerClient, image: str, volumes: dict[str, str], labels: dict[str, str]) -> str:
    """A container (made, not started) with the goal's volumes, to ship files in and out of them."""
    mounts = [Mount(target=target, source=name, type="volume") for target, name in volumes.items()]
    config = client.api.create_host_config(
        mounts=mounts,
        network_mode="none",
        cap_drop=["ALL"],
        cap_add=READ_ALL,
        security_opt=[NO_NEW_PRIVILEGES],
        read_only=True,
    )
    created: dict[str, Any] = client.api.create_container(
        image,
        command=["python3", "-c", OPAQUE_LISTER],
        entrypoint="",
        user="0:0",  # a capability is root's alone
        labels=labels,
        host_config=config,
    )
    return str(created["Id"])


def opaque_folders(client: docker.DockerClient, container_id: str) -> list[str]:
    client.api.start(container_id)
    status = client.api.wait(container_id, timeout=300).get("StatusCode")
    if status != 0:
        error = client.api.logs(container_id, stdout=False, stderr=True).decode("utf-8", "replace")
        raise ConfigError(
            f"cannot read the goal's changes whole on the Docker engine ({error.strip()[:200] or status}): "
            "the project was not changed"
        )
    out = client.api.logs(container_id, stdout=True, stderr=False)
    return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]
