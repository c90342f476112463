"""The paths a change set's commits touch, as git itself reads its patches (nothing is applied)."""

import os
import subprocess
from pathlib import Path

from nanocode.workspace.changeset import Manifest


def series_paths(manifest: Manifest, folder: Path) -> list[str]:
    """Every path a commit of the series adds, changes, deletes or renames (both names of a rename)."""
    found: set[str] = set()
    for name in manifest.series:
        found.update(_numstat(folder / "series" / name))
    return sorted(found)


def _numstat(patch: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    # No repository is looked for above the patch's own folder, whose names are nanocode's.
    env |= {"GIT_CEILING_DIRECTORIES": str(patch.parent), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    done = subprocess.run(
        ["git", "apply", "--numstat", "-z", str(patch)], cwd=patch.parent, env=env, capture_output=True, timeout=60
    )
    fields = done.stdout.split(b"\0")
    paths, i = [], 0
    while i < len(fields):
        parts = fields[i].split(b"\t")
        if len(parts) == 3 and parts[2]:
            paths.append(os.fsdecode(parts[2]))
        elif len(parts) == 3 and i + 2 < len(fields):
            paths += [os.fsdecode(fields[i + 1]), os.fsdecode(fields[i + 2])]
            i += 2
        i += 1
    return paths
