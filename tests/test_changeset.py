"""Change sets from an overlay upper folder made by hand (whiteouts, opaque folders), and apply."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanocode.workspace import apply, store, view
from nanocode.workspace.apply import ApplyError
from nanocode.workspace.changeset import Builder, Manifest
from nanocode.workspace.overlay import HostUpper

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are character devices: mknod needs root")


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, 0)


def _opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "user.overlay.opaque", b"y")


def _build(tmp_path: Path, project: Path, upper: Path, started: float | None = None) -> tuple[Manifest, Path]:
    change_id, folder = store.new_change()
    manifest = Manifest(change_id, "goal", str(project), started if started is not None else time.time())
    Builder(HostUpper(str(upper)), str(project), manifest, folder).build()
    store.save(manifest, folder)
    return manifest, folder


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    project, upper = tmp_path / "project", tmp_path / "upper"
    _write(project, {"keep.txt": "k\n", "mod.txt": "a\n", "del.txt": "d\n", "old/name.txt": "moved\n"})
    _write(project, {"file_then_dir": "f\n", "dir_then_file/x": "x\n", "redo/a": "a\n", "redo/b": "b\n"})
    (project / "run.sh").write_text("echo\n")
    upper.mkdir()
    return project, upper


@needs_root
def test_every_kind_of_change_is_found_and_applied(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    time.sleep(0.01)
    started = time.time()
    _write(upper, {"mod.txt": "a\nb\n", "new/deep.txt": "n\n", "new.name.txt": "moved\n", "file_then_dir/in": "i\n"})
    _write(upper, {"dir_then_file": "now a file\n", "keep.txt": "k\n", "redo/c": "c\n", "empty": ""})
    (upper / "bin.dat").write_bytes(b"\x00\x01\x02")
    (upper / "run.sh").write_text("echo\n")
    os.chmod(upper / "run.sh", 0o755)
    os.symlink("keep.txt", upper / "link")
    _whiteout(upper / "del.txt")
    _whiteout(upper / "old")
    _opaque(upper / "redo")
    manifest, folder = _build(tmp_path, project, upper, started)
    actions = {(e.action, e.path, e.origin) for e in manifest.entries}
    assert ("modify", "mod.txt", "") in actions
    assert ("delete", "del.txt", "") in actions
    assert ("rename", "new.name.txt", "old/name.txt") in actions
    assert ("add", "new/deep.txt", "") in actions and ("add", "empty", "") in actions
    assert ("delete", "file_then_dir", "") in actions and ("add", "file_then_dir/in", "") in actions
    assert ("delete", "dir_then_file/x", "") in actions and ("add", "dir_then_file", "") in actions
    assert ("delete", "redo/a", "") in actions and ("delete", "redo/b", "") in actions
    assert ("mode", "run.sh", "") in actions and ("add", "link", "") in actions
    assert not [e for e in manifest.entries if e.path == "keep.txt"]
    lines = view.summary(manifest, folder)
    assert any("bin.dat" in line and "binary" in line for line in lines)
    assert any("old/name.txt => new.name.txt" in line for line in lines)
    assert "Binary file bin.dat" in "\n".join(view.diff(manifest, folder))

    apply.apply(manifest, folder)
    assert (project / "mod.txt").read_text() == "a\nb\n" and not (project / "del.txt").exists()
    assert (project / "new.name.txt").read_text() == "moved\n" and not (project / "old").exists()
    assert (project / "file_then_dir" / "in").read_text() == "i\n"
    assert (project / "dir_then_file").read_text() == "now a file\n"
    assert sorted(os.listdir(project / "redo")) == ["c"]
    assert os.stat(project / "run.sh").st_mode & 0o777 == 0o755
    assert os.readlink(project / "link") == "keep.txt" and (project / "empty").read_bytes() == b""
    assert (project / "bin.dat").read_bytes() == b"\x00\x01\x02"
    assert not [p for p in project.iterdir() if p.name.startswith(".nanocode")]


def test_modes_reach_the_project_as_git_has_them(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    (project / "private.txt").write_text("p\n")
    os.chmod(project / "private.txt", 0o600)
    (project / "sub").mkdir(mode=0o700)
    modes = {"setuid": 0o4755, "wide": 0o777, "plain": 0o666, "private.txt": 0o2600, "run.sh": 0o1777}
    _write(upper, {"setuid": "s\n", "wide": "w\n", "plain": "p\n", "private.txt": "changed\n", "run.sh": "echo\n"})
    for name, mode in modes.items():
        os.chmod(upper / name, mode)
    (upper / "newdir").mkdir(mode=0o777)
    (upper / "sub").mkdir(mode=0o777)
    manifest, folder = _build(tmp_path, project, upper)
    assert "sub" not in {e.path for e in manifest.entries}  # a folder's own mode is not carried
    shown = "\n".join(view.diff(manifest, folder))
    assert "old mode 100644\nnew mode 100755" in shown and "new file mode 100755" in shown
    apply.apply(manifest, folder)
    found = {name: stat.S_IMODE(os.lstat(project / name).st_mode) for name in [*modes, "newdir", "sub"]}
    assert found == {
        "setuid": 0o755,
        "wide": 0o755,
        "plain": 0o644,
        "private.txt": 0o600,  # its executable bit untouched: the project's mode, less what the goal added
        "run.sh": 0o755,
        "newdir": 0o755,
        "sub": 0o700,
    }


def test_symlinks_show_their_targets_and_those_leaving_are_marked(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    for name, target in {"in": "keep.txt", "up": "../../etc/passwd", "abs": "/etc/passwd"}.items():
        os.symlink(target, upper / name)
    manifest, folder = _build(tmp_path, project, upper)
    lines = view.summary(manifest, folder)
    marked = {line.split("|")[0].strip() for line in lines if "[leaves the project]" in line}
    assert marked == {"up", "abs"} and any("-> keep.txt" in line for line in lines)
    assert "symlink to /etc/passwd" in "\n".join(view.diff(manifest, folder))


@needs_root
def test_git_and_secrets_are_never_part_of_a_change_set(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    _write(upper, {".git/config": "[core]\n\tfsmonitor = x\n", "sub/.git": "gitdir: /x\n", ".env": "K=v\n"})
    _write(upper, {"deep/.env.local": "K=v\n", ".env.example": "K=\n"})
    manifest, _ = _build(tmp_path, project, upper)
    assert sorted(e.path for e in manifest.entries if e.new.kind == "file") == [".env.example"]
    assert {".git", "sub/.git", ".env", "deep/.env.local"} <= set(manifest.ignored)


def test_a_thousand_files(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    _write(project, {f"many/{i}.txt": f"{i}\n" for i in range(1000)})
    _write(upper, {f"many/{i}.txt": f"{i} changed\n" for i in range(1000)})
    manifest, folder = _build(tmp_path, project, upper)
    assert len(manifest.entries) == 1000
    apply.apply(manifest, folder)
    assert (project / "many" / "999.txt").read_text() == "999 changed\n"


def test_a_conflict_applies_nothing(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    _write(upper, {"mod.txt": "goal\n", "brand.new": "n\n"})
    manifest, folder = _build(tmp_path, project, upper)
    (project / "mod.txt").write_text("user\n")
    with pytest.raises(ApplyError, match=r"mod\.txt: changed on the host since the goal started"):
        apply.apply(manifest, folder)
    assert not (project / "brand.new").exists()


def test_a_file_changed_during_the_goal_is_a_conflict(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    started = time.time() - 5
    (project / "mod.txt").write_text("the user, while the goal ran\n")
    _write(upper, {"mod.txt": "goal\n"})
    manifest, folder = _build(tmp_path, project, upper, started)
    with pytest.raises(ApplyError, match="changed on the host while the goal ran"):
        apply.apply(manifest, folder)


def test_a_symlink_the_host_made_on_the_way_is_refused(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(upper, {"newdir/file": "x\n"})
    manifest, folder = _build(tmp_path, project, upper)
    os.symlink(outside, project / "newdir")
    with pytest.raises(ApplyError, match="symlink"):
        apply.apply(manifest, folder)
    assert list(outside.iterdir()) == []


def test_a_failure_midway_leaves_the_project_as_it_was(
    trees: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, upper = trees
    _write(upper, {"mod.txt": "goal\n", "a/b/new.txt": "n\n", "z.txt": "z\n"})
    manifest, folder = _build(tmp_path, project, upper)
    before = {str(p.relative_to(project)): p.read_bytes() for p in project.rglob("*") if p.is_file()}
    real = os.replace
    calls = []

    def failing(source: str, target: str, **handles: int) -> None:
        calls.append(target)
        if len(calls) == 3:  # after the old mod.txt went aside and one new file was placed
            raise OSError(28, "No space left on device")
        real(source, target, **handles)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(ApplyError, match=r"nothing applied: .*No space left"):
        apply.apply(manifest, folder)
    monkeypatch.setattr(os, "replace", real)
    after = {str(p.relative_to(project)): p.read_bytes() for p in project.rglob("*") if p.is_file()}
    assert after == before and not (project / "a").exists()


def test_hostile_names_are_shown_escaped(trees: tuple[Path, Path], tmp_path: Path) -> None:
    project, upper = trees
    name = os.fsdecode(b"bad\xff\x1b[31mname")
    (upper / name).write_text("x\n")
    _build(tmp_path, project, upper)
    environment = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    command = [sys.executable, "-m", "nanocode", "diff", "last"]
    shown = subprocess.run(command, env=environment, capture_output=True, timeout=60, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert b"bad" in shown.stdout and b"\x1b" not in shown.stdout


def test_last_is_the_newest_change_set_of_the_project_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    mine, other = tmp_path / "mine", tmp_path / "other"
    for project in (mine, other):
        _write(project, {"a.txt": "a\n"})
        _write(tmp_path / f"upper-{project.name}", {"a.txt": f"changed in {project.name}\n"})
    first, _ = _build(tmp_path, mine, tmp_path / "upper-mine", started=1.0)
    newer, _ = _build(tmp_path, other, tmp_path / "upper-other", started=2.0)  # another project's, newer
    (mine / "sub").mkdir()
    for here in (mine, mine / "sub"):
        monkeypatch.chdir(here)
        assert store.folder_of("last").name == first.id
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="no kept change set for the project here"):
        store.folder_of("last")
    environment = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    listed = [sys.executable, "-m", "nanocode", "changes"]
    here = subprocess.run(listed, env=environment, capture_output=True, text=True, timeout=60, cwd=mine)
    every = subprocess.run([*listed, "--all"], env=environment, capture_output=True, text=True, timeout=60, cwd=mine)
    assert first.id in here.stdout and newer.id not in here.stdout and str(mine)[-20:] in here.stdout
    assert first.id in every.stdout and newer.id in every.stdout


@needs_root
def test_a_rename_into_a_repository_is_left_out_and_its_origin_still_goes(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    from nanocode.workspace import withhold

    project, upper = trees
    _write(project, {"repo/HEAD": "ref: refs/heads/main\n", "repo/objects/.keep": "", "repo/refs/.keep": ""})
    _write(upper, {"repo/config": "moved\n"})  # the goal moved old/name.txt there
    _whiteout(upper / "old")
    manifest, folder = _build(tmp_path, project, upper)
    assert [(e.action, e.origin) for e in manifest.entries if e.path == "repo/config"] == [("rename", "old/name.txt")]
    assert withhold.withhold(manifest, folder) and "repo/config" in manifest.ignored
    apply.apply(manifest, folder)
    assert not (project / "repo" / "config").exists() and not (project / "old").exists()


ELSEWHERE_IDS = st.one_of(
    st.from_regex(store.ID_FORM, fullmatch=True),
    st.text(max_size=24).filter(lambda t: "\0" not in t),
    st.sampled_from(["..", ".", "../x", "a/b", "/tmp/x", "last", "", ".hidden", "20261205-181603-ada7/.."]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change_id=ELSEWHERE_IDS)
def test_a_change_set_from_elsewhere_is_kept_only_as_one_folder_of_the_store(tmp_path: Path, change_id: str) -> None:
    """Invariant: store.adopt, given any id (it comes from a Ray node), makes at most the one folder
    `changes/ID` of the store, and only for an id in new_id's form."""
    sent = tmp_path / "sent"
    (sent / "blobs").mkdir(parents=True, exist_ok=True)
    (sent / store.MANIFEST).write_text("{}")
    store.paths.changes_folder().mkdir(parents=True, exist_ok=True)
    before = {p for p in tmp_path.rglob("*") if sent not in p.parents}
    store.adopt(sent, change_id)
    made = {p for p in tmp_path.rglob("*") if sent not in p.parents} - before
    kept = store.paths.changes_folder() / change_id
    if store.ID_FORM.fullmatch(change_id) and kept not in before:
        assert made == {kept, kept / store.MANIFEST, kept / "blobs"} - before
    else:
        assert not made
