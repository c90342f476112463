"""The kept change sets: one folder each under the state folder, named by an id; `last` is the newest."""

import os
import re
import secrets
import shutil
from datetime import datetime
from pathlib import Path

from nanocode.errors import ConfigError
from nanocode.workspace import paths
from nanocode.workspace.changeset import Manifest

MANIFEST = "manifest.json"


ID_FORM = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")  # what new_id gives


def new_id() -> str:
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def new_change() -> tuple[str, Path]:
    """A fresh id and its folder; goals that end in the same second (a batch) get ids of their own."""
    paths.changes_folder().mkdir(parents=True, exist_ok=True)
    while True:
        change_id = new_id()
        folder = paths.changes_folder() / change_id
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return change_id, folder


def save(manifest: Manifest, folder: Path) -> None:
    temporary = folder / (MANIFEST + ".part")
    temporary.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(temporary, folder / MANIFEST)


def listed() -> list[Manifest]:
    """Every kept change set, newest first."""
    root = paths.changes_folder()
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        try:
            found.append(Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # being written, or not one of ours
    return sorted(found, key=lambda m: (m.created, m.id), reverse=True)


def of_project(kept: list[Manifest], where: Path | None = None) -> list[Manifest]:
    """The change sets of the project the current folder is in (the folder itself or one above it)."""
    here = (where or Path.cwd()).resolve()
    return [m for m in kept if here == Path(m.project) or Path(m.project) in here.parents]


def folder_of(change_id: str) -> Path:
    if change_id == "last":
        kept = of_project(listed())
        if not kept:
            raise ConfigError(
                f"there is no kept change set for the project here ({Path.cwd()}): nanocode changes --all lists "
                "every project's, by ID"
            )
        change_id = kept[0].id
    folder = paths.changes_folder() / change_id
    if not _named(change_id) or not (folder / MANIFEST).is_file():
        raise ConfigError(f"no change set {change_id!r} (nanocode changes lists them)")
    return folder


def _named(change_id: str) -> bool:
    """An id names a folder right under the store's, never one beside or above it."""
    return bool(change_id) and "/" not in change_id and not change_id.startswith(".")


def adopt(changes: Path, change_id: str) -> None:
    """A change set made elsewhere (a Ray node, which keeps none) kept here under its id too, unless
    one of that id is here already: `nanocode diff ID` finds it as a local goal's. The id came from
    another machine: it is taken only in the form new_id gives, which names one folder of the store."""
    target = paths.changes_folder() / change_id
    if ID_FORM.fullmatch(change_id) and (changes / MANIFEST).is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(changes, target, symlinks=True)


def load(change_id: str) -> tuple[Manifest, Path]:
    folder = folder_of(change_id)
    try:
        return Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8")), folder
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"the change set {change_id} cannot be read: {exc}") from None


def discard(change_id: str) -> str:
    folder = folder_of(change_id)
    shutil.rmtree(folder)
    return folder.name
