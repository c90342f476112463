"""Flagged by what runs, on the real engine: a Makefile only a commit brings, a flagged folder reached
through a symlink, case variants and the other files host tools run, newly executable files; and
nothing else."""

from pathlib import Path
from typing import Any

import pytest

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.workspace_support import nanocode, repo

pytestmark = pytest.mark.usefixtures("no_leftovers", "no_leftover_volumes")
IDENT = "git -c user.name=m -c user.email=m@x"
FLAG = "[runs on the host: review]"


def _goal(tmp_path: Path, api: ScriptedAPI, project: Path, script: str, *options: str) -> str:
    api.add(tools(call("shell", {"command": script})), message(f"{MARKER} done"))
    done = nanocode(tmp_path, api, "--sandbox", *options, "-p", "g", "--project", str(project))
    assert done.returncode == 0, done.stderr
    return done.stderr


def _flags(stderr: str) -> dict[str, bool]:
    """Each path of the summary, and whether it is flagged."""
    rows = [line for line in stderr.splitlines() if " | " in line]
    return {row.split(" | ")[0].strip(): FLAG in row for row in rows}


@pytest.mark.parametrize("options", [("--workspace", "overlay"), ("--workspace", "overlay", "--apply")])
def test_what_host_tools_run_is_flagged_and_nothing_else(
    options: tuple[str, ...], docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n", "tool.sh": "echo\n"})
    script = (
        f"echo 'all:; touch /tmp/x' > Makefile && git add Makefile && {IDENT} commit -qm make && rm Makefile && "
        "mkdir cfg && echo '{}' > cfg/settings.json && ln -s cfg .vscode && "
        "echo x > MAKEFILE.d && mkdir -p deep/er && echo t > deep/er/Tox.ini && echo i > lib.PTH && "
        "echo s > sitecustomize.py && echo n > .NPMRC && echo r > README.md && echo y > notes.txt && "
        "printf '#!/bin/sh\\n' > new.sh && chmod +x new.sh tool.sh && ln -s tool.sh also.sh && "
        "echo p > setup.py && ln -s setup.py build-it && ln -s /etc/passwd out"
    )
    stderr = _goal(tmp_path, api, project, script, *options)
    flags = _flags(stderr)
    assert any(line.startswith(" the commits touch Makefile") and FLAG in line for line in stderr.splitlines())
    flagged = [".vscode", "cfg/settings.json", "deep/er/Tox.ini", "lib.PTH", "sitecustomize.py", ".NPMRC", "new.sh"]
    assert all(flags[path] for path in [*flagged, "tool.sh", "also.sh", "build-it", "out"]), flags
    assert not any(flags[path] for path in ["README.md", "notes.txt", "MAKEFILE.d"]), flags


def test_bind_mode_says_what_the_goal_changed_that_host_tools_run(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "a\n", "tool.sh": "echo\n", "setup.cfg": "[x]\n"})
    script = (
        "echo 'all:; touch /tmp/x' > GNUmakefile && mkdir cfg && echo '{}' > cfg/settings.json && ln -s cfg .vscode && "
        "echo i > lib.PTH && chmod +x tool.sh && rm setup.cfg && echo r > README.md && echo a >> a.txt"
    )
    stderr = _goal(tmp_path, api, project, script, "--workspace", "bind")
    warning = next(line for line in stderr.splitlines() if "host tools run" in line)
    listed = warning.split("themselves: ")[1].split(FLAG)[0].strip().split(", ")
    assert {"GNUmakefile", "cfg/settings.json", ".vscode", "lib.PTH", "tool.sh", "setup.cfg"} <= set(listed)
    assert "README.md" not in listed and "a.txt" not in listed


def test_in_bind_mode_a_folder_named_like_the_quarantine_hides_nothing_from_the_warning(
    docker_engine: Any, sandbox_image: str, api: ScriptedAPI, tmp_path: Path
) -> None:
    """Only what nanocode itself moved aside in this goal is left out of the warning (its own warning
    names it); folders the goal names as nanocode names its quarantine are walked as any other."""
    project = repo(tmp_path / "p", {"a.txt": "a\n"})
    alike = ["x.nanocode-quarantine-1", ".nanocode-quarantine-0123456789abcdef", "d/.git.nanocode-quarantine-feed"]
    script = (
        "mkdir -p sub && git -C sub init -q && "
        + " && ".join(f"mkdir -p {folder} && echo 'all:; touch /tmp/x' > {folder}/Makefile" for folder in alike)
        + f" && echo 'echo hi' > {alike[1]}/.envrc && printf '#!/bin/sh\\n' > {alike[0]}/run && chmod +x {alike[0]}/run"
    )
    stderr = _goal(tmp_path, api, project, script, "--workspace", "bind")
    moved = next(line for line in stderr.splitlines() if "moved to" in line).split("moved to ")[1].strip()
    own = Path(moved).relative_to(project).as_posix()
    warning = next(line for line in stderr.splitlines() if "host tools run" in line)
    listed = set(warning.split("themselves: ")[1].split(FLAG)[0].strip().split(", "))
    hidden = {f"{folder}/Makefile" for folder in alike} | {f"{alike[1]}/.envrc", f"{alike[0]}/run"}
    assert hidden <= listed, listed
    assert own.startswith("sub/.git.nanocode-quarantine-") and not any(p.startswith(own) for p in listed), listed
