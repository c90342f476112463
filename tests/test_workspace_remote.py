"""An engine that cannot see the project: overlay ships it there and back; bind refuses in one line."""

from pathlib import Path
from typing import Any

from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, message, text, tools
from tests.second_engine import SecondEngine
from tests.workspace_support import git, nanocode, repo


def _leftovers(engine: SecondEngine, project: Path) -> list[str]:
    """What a goal of `project` left on the engine, which other tests' goals share."""
    mine = {"label": f"nanocode.project={project}"}
    containers = [r["Id"] for r in engine.client.api.containers(all=True, filters=mine)]
    volumes = [r["Name"] for r in engine.client.api.volumes(filters=mine).get("Volumes") or []]
    return containers + volumes


def test_overlay_ships_the_project_and_brings_the_change_set_back(
    second_engine: SecondEngine, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = repo(tmp_path / "p", {"a.txt": "one\n", "d/x.txt": "x\n", "d/y.txt": "y\n", "old.txt": "old\n"})
    (project / ".env").write_text("KEY=secret\n")
    ident = "git -c user.name=m -c user.email=m@x"
    api.add(
        tools(call("shell", {"command": "cat .env a.txt; ls -a"})),
        tools(
            call(
                "shell",
                {
                    "command": f"echo two >> a.txt && {ident} commit -qam two && rm -rf d && mkdir d && "
                    "echo z > d/z.txt && rm old.txt && echo KEY=x > .env.local && echo new > new.txt"
                },
            )
        ),
        message(f"{MARKER} done remotely"),
    )
    done = nanocode(
        tmp_path,
        api,
        "--sandbox",
        "--workspace",
        "overlay",
        "--image",
        second_engine.image,
        "-p",
        "remote",
        "--project",
        str(project),
        DOCKER_HOST=second_engine.url,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done remotely\n"
    seen = next(text(m) for m in api.requests[1]["messages"] if m["role"] == "tool")
    assert "one" in seen and "KEY=secret" not in seen and "\n.env\n" not in seen
    assert (project / "a.txt").read_text() == "one\n" and (project / "d" / "x.txt").exists()
    assert not _leftovers(second_engine, project)

    applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert git(project, "log", "--format=%s").split() == ["two", "start"]
    assert (project / "a.txt").read_text() == "one\ntwo\n"
    assert sorted(p.name for p in (project / "d").iterdir()) == ["z.txt"]
    assert not (project / "old.txt").exists() and (project / "new.txt").read_text() == "new\n"
    assert not (project / ".env.local").exists() and (project / ".env").read_text() == "KEY=secret\n"


def test_bind_refuses_an_engine_that_cannot_see_the_project(
    second_engine: SecondEngine, api: ScriptedAPI, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    done = nanocode(
        tmp_path,
        api,
        "--sandbox",
        "--image",
        second_engine.image,
        "-p",
        "x",
        "--project",
        str(project),
        DOCKER_HOST=second_engine.url,
    )
    assert done.returncode == 3
    assert "--workspace overlay" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(project.iterdir()) == [] and not _leftovers(second_engine, project)


def test_the_local_engine_sees_the_project(docker_engine: Any, sandbox_image: str, tmp_path: Path) -> None:
    from nanocode.workspace import remote

    assert remote.sees_project(docker_engine, str(tmp_path), sandbox_image)
    assert list(tmp_path.iterdir()) == []


def test_an_upper_brought_back_is_extracted_through_no_symlink(tmp_path: Path) -> None:
    """An archive whose members name a way through a symlink an earlier member made (or the same name
    twice) writes nothing outside the folder it is extracted into."""
    import io
    import tarfile

    from nanocode.workspace import remote

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("mine\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, target in [
            ("u/d", tarfile.SYMTYPE, str(outside)),
            ("u/d/victim", tarfile.REGTYPE, ""),
            ("u/f", tarfile.SYMTYPE, str(outside / "victim")),
            ("u/f", tarfile.REGTYPE, ""),
            ("u/ok", tarfile.REGTYPE, ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, target, 0o644
            data = b"pwned\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "upper"
    root.mkdir()
    remote.RemoteUpper(str(root)).extract(iter([buffer.getvalue()]), "u")
    assert (outside / "victim").read_text() == "mine\n" and sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (root / "ok").read_text() == "pwned\n" and (root / "f").is_symlink()


def test_a_folder_made_anew_under_one_the_goal_closed_to_all_is_still_seen_made_anew(
    second_engine: SecondEngine, api: ScriptedAPI, tmp_path: Path
) -> None:
    """The upper is read whole whatever modes the goal left in it: a folder deleted and made again
    (overlayfs marks it opaque) under a folder the goal set to mode 000 still replaces the old one."""
    project = repo(tmp_path / "p", {"top/d/old.txt": "old\n", "top/keep.txt": "keep\n"})
    command = "rm -rf top/d && mkdir top/d && echo new > top/d/new.txt && chmod 000 top"
    api.add(tools(call("shell", {"command": command})), message(f"{MARKER} done"))
    args = ["--sandbox", "--workspace", "overlay", "--image", second_engine.image, "-p", "x", "--project", str(project)]
    done = nanocode(tmp_path, api, *args, DOCKER_HOST=second_engine.url)
    assert done.returncode == 0, done.stderr
    applied = nanocode(tmp_path, None, "apply", "last", cwd=project)
    assert applied.returncode == 0, applied.stderr
    (project / "top").chmod(0o755)
    assert sorted(p.name for p in (project / "top" / "d").iterdir()) == ["new.txt"]
    assert not _leftovers(second_engine, project)
