"""The paths a change set's commits touch, from the start to the goal's tip, as git listed them when
the series was read (gitseries; both names of a rename)."""

from pathlib import Path

from nanocode.workspace.changeset import Manifest


def series_paths(manifest: Manifest, folder: Path) -> list[str]:
    """Every path a commit of the series adds, changes, deletes or renames (both names of a rename)."""
    return sorted(set(manifest.committed))
