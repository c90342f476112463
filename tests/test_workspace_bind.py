"""Bind mode's git folders, without an engine: what is found, protected and moved aside."""

import os
from pathlib import Path

import pytest

from nanocode.workspace import bind
from nanocode.workspace.bind import QuarantineFailed


def test_every_git_is_found_and_mounted_read_only(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    (tmp_path / "deep" / "er" / ".git").mkdir(parents=True)
    (tmp_path / ".realgit").mkdir()
    (tmp_path / "linked").mkdir()
    os.symlink("../.realgit", tmp_path / "linked" / ".git")
    gits = bind.find_gits(str(tmp_path))
    assert set(gits) == {".git", "sub/.git", "deep/er/.git", "linked/.git"}
    mounts = {m["Target"]: m["ReadOnly"] for m in bind.read_only_mounts(str(tmp_path), gits)}
    expected = [".git", "sub/.git", "deep/er/.git", ".realgit"]
    assert mounts == {str(tmp_path / name): True for name in expected}


def test_what_appeared_or_changed_is_moved_aside_to_a_fresh_name(tmp_path: Path) -> None:
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text("gitdir: /somewhere\n")
    before = bind.find_gits(str(tmp_path))
    (tmp_path / "wt" / ".git").write_text("gitdir: /elsewhere\n")
    (tmp_path / "new" / ".git").mkdir(parents=True)
    (tmp_path / "new" / ".git.nanocode-quarantine-0000000000000000").mkdir()  # a name it cannot guess
    moved = bind.quarantine(bind.planted(str(tmp_path), before))
    assert [os.path.relpath(path, tmp_path) for path, _ in moved] == ["new/.git", "wt/.git"]
    assert all(Path(target).exists() and ".nanocode-quarantine-" in target for _, target in moved)
    assert not (tmp_path / "new" / ".git").exists() and not (tmp_path / "wt" / ".git").exists()
    assert bind.planted(str(tmp_path), before) == []


def test_a_move_that_fails_is_one_line_and_its_own_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()

    def refused(source: str, target: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(QuarantineFailed) as caught:
        bind.quarantine([str(tmp_path / ".git")])
    assert caught.value.exit_code == 6
    assert "could not be moved aside (Permission denied)" in caught.value.format_message()
    assert "\n" not in caught.value.format_message()
