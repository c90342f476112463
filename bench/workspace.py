"""Section 9: workspaces. A goal's sandbox up and down with overlay against bind, on a big project;
the change set of 1,000 changed files; the rate at which a project is shipped to an engine's API.

The project is 50,000 files and 1 GB (5,000 files and 100 MB with --quick). Every variant opens the
workspace, starts the goal's container with its mounts, and closes both, as a session does; the
ship-in rate is measured through the remote path (a tar stream into a volume over the engine's
API) against the engine at hand, which is the same path a remote engine is sent through.
"""

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from typing import Any

from common import OUTPUT_CAP, expect, interleaved, ms

from nanocode.sandbox.executor import SandboxExecutor
from nanocode.workspace import remote, store
from nanocode.workspace.workspace import RemoteWorkspace, open_workspace

SECTION = "9. workspaces: overlay against bind"


def _project(files: int, size: int) -> str:
    """A project of `files` files in folders of 1,000, `size` bytes in all, with a git repository."""
    root = tempfile.mkdtemp(prefix="nanocode-bench-ws-")
    each = size // files
    block = os.urandom(each)
    for i in range(files):
        folder = os.path.join(root, f"d{i // 1000:03}")
        if i % 1000 == 0:
            os.mkdir(folder)
        with open(os.path.join(folder, f"f{i:05}.dat"), "wb") as f:
            f.write(block[i % 64 :] + block[: i % 64])
    os.makedirs(os.path.join(root, ".git", "hooks"))
    with open(os.path.join(root, ".git", "HEAD"), "w") as f:
        f.write("ref: refs/heads/main\n")
    return root


def _goal(bench: Any, project: str, mode: str, command: str = "") -> Any:
    """One goal's workspace and sandbox, up and down; returns the workspace's change set."""
    workspace = open_workspace(bench.client, project, mode, uuid.uuid4().hex[:12], lambda text: None, bench.image)
    try:
        config = dataclasses.replace(bench.config, project=project, mounts=workspace.mounts)
        executor = SandboxExecutor(bench.client, config, OUTPUT_CAP)
        try:
            if command:
                result = executor.run(command, 120)
                expect(result.exit_code == 0, f"the bench command failed: {result.stderr[:300]}")
        finally:
            executor.close()
        started = time.perf_counter()
        kept = workspace.finish("bench", "complete")
        bench.last_finish = time.perf_counter() - started
        return kept
    finally:
        workspace.close()


def section(bench: Any) -> None:
    quick = bench.args.quick
    files, size = (5_000, 100 << 20) if quick else (50_000, 1 << 30)
    project = _project(files, size)
    bench.cleanup.push(lambda: shutil.rmtree(project, ignore_errors=True))
    expect(remote.sees_project(bench.client, project, bench.image), "the engine cannot see the bench project")
    label = f"{files:,} files, {size >> 20} MB"
    _up_down(bench, project, label)
    _change_set(bench, project)
    _ship_in(bench, project, size, label)


def _up_down(bench: Any, project: str, label: str) -> None:
    reps = min(bench.reps, 10 if bench.args.quick else 20)
    samples = interleaved(
        {"bind": lambda: _goal(bench, project, "bind"), "overlay": lambda: _goal(bench, project, "overlay")},
        reps,
        bench.warmup,
    )
    bind = bench.report.add(SECTION, f"bind: workspace + sandbox up and down ({label})", "ms", ms(samples["bind"]))
    over = bench.report.add(
        SECTION,
        f"overlay: workspace + sandbox up and down, change set (none) included ({label})",
        "ms",
        ms(samples["overlay"]),
        "the overlay volume and layer made and removed; bind walks the project for its .git folders",
    )
    bench.report.target("(9) overlay up+down / bind", over.median / bind.median, "<=", 1.2, "x", "ratio of medians")


def _change_set(bench: Any, project: str) -> None:
    reps = 3 if bench.args.quick else 10
    command = "for d in d000/f00*.dat; do echo changed >> $d; done; ls d000/f00*.dat | wc -l"
    times = []
    for _ in range(reps):
        kept = _goal(bench, project, "overlay", command)
        expect(kept is not None and len(kept.manifest.entries) == 1000, "the change set is not 1,000 files")
        times.append(bench.last_finish)
        store.discard(kept.id)
    figure = bench.report.add(
        SECTION,
        "change set of 1,000 changed files computed and kept",
        "ms",
        ms(times),
        "workspace.finish(): the upper folder walked against the project, contents hashed and kept",
    )
    bench.report.target("(9) change set of 1,000 files", figure.median, "<", 1000, "ms", "median")


def _ship_in(bench: Any, project: str, size: int, label: str) -> None:
    reps = 1 if bench.args.quick else 3
    rates = []
    for _ in range(reps):
        workspace = RemoteWorkspace(bench.client, project, uuid.uuid4().hex[:12], lambda text: None, bench.image)
        try:
            started = time.perf_counter()
            workspace.open()
            rates.append(size / (1 << 20) / (time.perf_counter() - started))
        finally:
            workspace.close()
    bench.report.add(
        SECTION,
        f"ship-in through the engine's API ({label})",
        "MB/s",
        rates,
        "tar stream into a volume, then the overlay volume made: what a remote engine costs at start",
    )
