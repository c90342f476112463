"""A goal's workspace: how the project is shared with its container, and what comes back.

ws = open_workspace(client, project, mode, goal, note)   # before the container
... the container runs with ws.mounts ...
kept = ws.finish(goal_text, outcome)                      # after it is removed: a change set or None
ws.close()                                                # always; removes what the workspace made
"""

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException
from docker.types import Mount
from requests import RequestException
from urllib3.exceptions import HTTPError

from nanocode import display
from nanocode.errors import ConfigError
from nanocode.sandbox import container, protect
from nanocode.workspace import (
    bind,
    bindflags,
    flagging,
    gitseries,
    journal,
    lease,
    overlay,
    remote,
    store,
    view,
    withhold,
)
from nanocode.workspace.changeset import Builder, Manifest, Upper

MODES = ("bind", "overlay")
Note = Callable[[str], None]


@dataclass
class Kept:
    """A change set as kept under the state folder."""

    manifest: Manifest
    folder: Path

    @property
    def id(self) -> str:
        return self.manifest.id

    def summary(self) -> list[str]:
        return view.summary(self.manifest, self.folder)

    @property
    def notes(self) -> list[str]:
        return self.manifest.notes


class Workspace:
    """Bind mode, and the base of the others: the project itself, its git folders read-only."""

    mode = "bind"

    def __init__(
        self, client: docker.DockerClient, project: str, goal: str, note: Note, image: str = "", user: str = ""
    ):
        self.client = client
        self.image = image
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self.project = project
        self.goal = goal
        self.note = note
        self.started = time.time()
        self.mounts: list[Mount] = []
        self.journal: Path | None = None
        self.keep = False  # what the goal wrote could not be read: left for the user
        self.lease: lease.Lease | None = None  # bind mode: the project, held alone until the clean-up is done

    def open(self) -> None:
        self.lease = lease.hold(self.project)  # before anything is read: another goal's end must not come between
        self.before = bind.snapshot(self.project)
        self.kept = bindflags.kept(self.project, self.before.gits)  # read-only while the goal runs: left out
        self.flagged_before = bindflags.flagged_names(self.project, self.kept, self.note)
        # what a recovery needs to warn as finish does
        fields = self.before.fields() | {"flagged": self.flagged_before, "kept": self.kept}
        self.journal = journal.write(self.goal, mode="bind", project=self.project, started=self.started, **fields)
        self.mounts = protect.project_mounts(self.project, os.getcwd())
        self.mounts += bind.read_only_mounts(self.project, self.before.gits)

    def finish(self, goal: str, outcome: str) -> Kept | None:
        """Moves aside the repositories that came into being or changed; never a change set: the
        project was live."""
        moved, aside = _move_aside(self.project, self.before, self.started)
        for path, target in moved:
            self.note(
                f"warning: the sandbox made {display.name(path)}, which host git would read; "
                f"it was moved to {display.name(target)}"
            )
        for line in _bits_and_flags(self.project, self.started, self.flagged_before, aside, self.kept):
            self.note(line)
        if self.journal is not None:
            journal.done(self.journal)
            self.journal = None
        return None

    def close(self) -> None:
        """Nothing to remove; a journal still here (the goal never finished) stays for the next start.
        The project's lease is let go: the clean-up is done (or left to the next start, which takes it)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None


class OverlayWorkspace(Workspace):
    """The project seen through a private copy-on-write layer; the host's project is not touched."""

    mode = "overlay"

    def open(self) -> None:
        self.start = gitseries.start_point(self.project)
        self.volume = f"nanocode-{self.goal}"
        self.layer = overlay.layer_folder(self.goal)
        self.journal = journal.write(
            self.goal, mode="overlay", project=self.project, volume=self.volume, layer=str(self.layer)
        )
        self.layer.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepare()
        self.mounts = [overlay.volume_mount(self.volume, self.project)]
        self.mounts += protect.secret_mounts(self.project, os.getcwd())

    def _prepare(self) -> None:
        upper, work = overlay.make_layer(self.project, self.goal)
        options = overlay.overlay_options(self.project, upper, work)
        overlay.create_volume(self.client, self.volume, options, container.owner_labels(self.goal, self.project))

    def _upper(self) -> Upper:
        return overlay.HostUpper(str(self.layer / "upper"))

    def finish(self, goal: str, outcome: str) -> Kept | None:
        """The change set of the goal, kept; None when the goal changed nothing."""
        overlay.remove_volume(self.client, self.volume)  # unmounted: the layer holds still
        upper = self._upper()
        change_id, folder = store.new_change()
        manifest = Manifest(change_id, goal, self.project, self.started, outcome=outcome, git=dict(self.start))
        try:
            compute(upper, manifest, folder)
            kept = Kept(manifest, folder)
        except (OSError, RecursionError) as exc:  # a layer too deep, or a file that cannot be read
            _remove(folder)
            self.keep = True
            raise ConfigError(
                f"the goal's change set could not be computed ({exc}): its layer is kept in {self.layer}"
            ) from None
        except BaseException:
            _remove(folder)
            raise
        if not manifest.entries and not manifest.git.get("tip"):
            for line in kept.notes:
                self.note(line)
            _remove(folder)
            return None
        store.save(manifest, folder)
        return kept

    def close(self) -> None:
        overlay.remove_volume(self.client, self.volume)
        if not self.keep:
            overlay.remove_layer(self.layer)
        if self.journal is not None:
            journal.done(self.journal)
            self.journal = None


class RemoteWorkspace(OverlayWorkspace):
    """Overlay mode on an engine that cannot see the project: shipped in, and the layer shipped back."""

    def _prepare(self) -> None:
        try:
            self._ship()
        except DockerException as exc:
            raise ConfigError(f"cannot send the project to the Docker engine: {str(exc).splitlines()[0]}") from None

    def _ship(self) -> None:
        labels = container.owner_labels(self.goal, self.project)
        self.lower, self.upper_volume = f"{self.volume}-lower", f"{self.volume}-upper"
        for name in (self.lower, self.upper_volume):
            self.client.api.create_volume(name=name, driver="local", labels=labels)
        volumes = {"/lower": self.lower, "/upper": self.upper_volume}
        self.helper = remote.helper(self.client, self.image, volumes, labels)
        # There, the project is the sandbox's user's: it may change every file, with no capability.
        uid, _, gid = self.user.partition(":")
        owner = (int(uid), int(gid or uid))
        mode = os.stat(self.project).st_mode & 0o7777
        self.client.api.put_archive(self.helper, "/upper", remote.layer_tar(*owner, mode))
        self.client.api.put_archive(self.helper, "/lower", remote.streamed(self.project, owner))
        lower = self.client.api.inspect_volume(self.lower)["Mountpoint"]
        upper = self.client.api.inspect_volume(self.upper_volume)["Mountpoint"]
        options = overlay.overlay_options(lower, f"{upper}/u", f"{upper}/w")
        overlay.create_volume(self.client, self.volume, options, labels)

    def open(self) -> None:
        self.helper = ""
        super().open()
        self.mounts = self.mounts[:1]  # the secrets were never shipped: nothing to mask

    def _upper(self) -> Upper:
        folder = self.layer / "upper"
        folder.mkdir(parents=True, exist_ok=True)
        upper = remote.RemoteUpper(str(folder))
        try:
            stream, _ = self.client.api.get_archive(self.helper, "/upper/u")
            upper.extract(stream, "u")
            opaque = remote.opaque_folders(self.client, self.helper)
        except (DockerException, RequestException, HTTPError) as exc:  # HTTPError: a stream cut off
            raise ConfigError(
                f"cannot bring the goal's changes back from the Docker engine ({str(exc).splitlines()[0]}): "
                "the project was not changed"
            ) from None
        upper.opaque = {os.path.join(str(folder), name) for name in opaque}
        return upper

    def close(self) -> None:
        # An engine gone away keeps what is on it (for `sandbox prune`); what is on this machine still goes.
        with contextlib.suppress(RequestException):
            if self.helper:
                container.remove(self.client, self.helper)
        for name in (getattr(self, "lower", ""), getattr(self, "upper_volume", "")):
            if name:
                overlay.remove_volume(self.client, name)
        super().close()


def compute(upper: Upper, manifest: Manifest, folder: Path) -> None:
    """Fills the manifest (made with the goal's start in `git`) from the goal's layer: the final state of
    every path it changed, its commits, and what is withheld from both."""
    Builder(upper, manifest.project, manifest, folder).build()
    found = gitseries.series(upper, manifest.project, dict(manifest.git), folder)
    manifest.series, manifest.committed = found.commits, found.paths
    if found.tip:
        manifest.git |= {"tip": found.tip, "bundle": found.bundle, "rewritten": found.note}
    if found.note:
        manifest.notes.append(found.note)
    manifest.notes += withhold.withhold(manifest, folder)
    manifest.flagged_commits = flagging.mark(manifest, folder)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def open_workspace(
    client: docker.DockerClient,
    project: str,
    mode: str,
    goal: str,
    note: Note,
    image: str,
    user: str = "",
    ship: bool = False,
) -> Workspace:
    """A workspace for one goal, ready: its `mounts` go to the goal's container (made from `image`,
    run as `user`). On an engine that cannot see the project, overlay ships it; bind refuses.
    `ship`: overlay ships it anyway, owned by `user` there (a user that cannot write the project's
    files in place: root with no capability, on a project of another uid)."""
    if mode not in MODES:
        raise ConfigError(f"--workspace {mode!r} is not one of {', '.join(MODES)}")
    local = not (ship and mode == "overlay") and remote.sees_project(client, project, image)
    if not local and mode == "bind":
        raise ConfigError(
            f"the Docker engine cannot see {project} (a remote engine, or a VM whose paths are not shared): "
            "use --workspace overlay, which sends the project to it"
        )
    kind = Workspace if mode == "bind" else OverlayWorkspace if local else RemoteWorkspace
    workspace = kind(client, project, goal, note, image, user)
    try:
        workspace.open()
    except BaseException:
        workspace.close()
        raise
    return workspace


def _move_aside(
    project: str, before: bind.Snapshot, since: float | None
) -> tuple[list[tuple[str, str]], bindflags.Aside]:
    """Moves aside the repositories planted since the start (`before`, at `since`); what was moved
    (path, target), and what nanocode moved, by identity rather than by name (`bindflags.own`)."""
    moved = bind.quarantine(project, bind.planted(project, before, since), before)
    return moved, bindflags.own(project, [target for _, target in moved])


def _bits_and_flags(
    project: str,
    since: float,
    flagged_before: list[str] | None,
    aside: bindflags.Aside,
    keep: bindflags.Kept,
    who: str = "the goal",
) -> list[str]:
    """The warnings of a bind goal's end, after what it planted was moved aside (`aside`): the unsafe
    bits taken off what it changed, and the changed files host tools run by themselves (None: the
    flagged names there at the start are not known, so what went cannot be told: said so). `keep`:
    the `.git`s there at the start (`bindflags.kept`), the only ones the walk leaves out."""
    lines: list[str] = []
    seen = bindflags.walk(project, keep, lines.append, unlock=since)  # once, after the moves: both asks below read it
    special = bindflags.unset_special(project, since, seen)
    if special:
        taken = f"the bits were taken off: {_shown(special)}"
        lines.append(f"warning: {who} made files setuid, setgid or writable by anyone; {taken}")
    if flagged_before is None:
        lines.append(f"warning: what {who} changed that host tools run by themselves could not be checked: review it")
        return lines
    flagged = bindflags.changed(project, since, flagged_before, seen, aside)
    if flagged:
        lines.append(f"warning: {who} changed what host tools run by themselves: {_shown(flagged)}{view.FLAG}")
    return lines


def _shown(found: list[str]) -> str:
    return ", ".join(display.name(p) for p in found[:20]) + (", ..." if len(found) > 20 else "")


def recover(client: docker.DockerClient, note: Note) -> None:
    """Finishes the clean-up of goals whose nanocode was killed: git folders planted in bind mode are
    moved aside, bits taken off and its flagged changes warned of, as the goal's end would have; an
    overlay's volume and layer are removed. A bind project another goal holds now is left for a later
    start: its clean-up would reach what that goal is making."""
    live = container.live_goals(client)  # a goal whose sandbox runs is alive, whatever its pid looks like here
    for path, entry in journal.orphans():
        if entry.get("goal") in live:
            continue
        project, held = str(entry.get("project", "")), None
        if entry.get("mode") == "bind" and os.path.isdir(project):
            try:
                held = lease.take(project)
            except OSError as exc:
                note(f"warning: a killed goal in {display.name(project)} could not be finished: {exc.strerror or exc}")
            if held is None:
                continue
            try:
                _recover_bind(project, entry, note)
            finally:
                held.release()
        elif entry.get("mode") == "overlay":
            overlay.remove_volume(client, str(entry.get("volume", "")))
            layer = Path(str(entry.get("layer", "")))
            if layer.parent == overlay.layer_folder("x").parent:
                overlay.remove_layer(layer)
        journal.done(path)


def _recover_bind(project: str, entry: dict[str, Any], note: Note) -> None:
    """A killed bind goal's end: as `Workspace.finish`, from what its journal says of its start."""
    before = bind.Snapshot.of(entry)
    started = entry.get("started")
    since = started if isinstance(started, int | float) else None  # None: not known, so no folder is unlocked
    moved, aside = _move_aside(project, before, since)
    for planted, target in moved:
        note(f"warning: a killed goal's sandbox made {display.name(planted)}; it was moved to {display.name(target)}")
    flagged, who = entry.get("flagged"), f"a killed goal in {display.name(project)}"
    if since is None:  # when it started is not known: nothing can be told by time
        note(f"warning: what {who} changed that host tools run by themselves could not be checked: review it")
        return
    known = [str(p) for p in flagged] if isinstance(flagged, list) else None  # None: a journal of an older nanocode
    for line in _bits_and_flags(project, since, known, aside, bindflags.kept_of(entry.get("kept")), who):
        note(line)
