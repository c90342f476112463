"""The goal's `.git` layer is read through real folders only: whatever tree the goal leaves under
`.git`, a symlink anywhere in it means the repository was replaced and nothing of it is read; without
one, the objects it wrote are copied whole, `objects/info` (alternates) left out."""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode.workspace.gitlayer import GitLayer, Replaced

NAMES = st.sampled_from(["ab", "cd", "info", "pack", "x1", "y2"])
TREES = st.recursive(
    st.sampled_from(["file", "link"]),
    lambda inner: st.dictionaries(NAMES, inner, min_size=1, max_size=3),
    max_leaves=10,
)


class _Upper:
    def __init__(self, root: str):
        self.root = root

    def is_opaque(self, path: str) -> bool:
        return False


def _make(folder: Path, tree: object, outside: Path) -> None:
    assert isinstance(tree, dict)
    folder.mkdir(parents=True, exist_ok=True)
    for name, inner in tree.items():
        if inner == "link":
            (folder / name).symlink_to(outside)
        elif inner == "file":
            (folder / name).write_text(name)
        else:
            _make(folder / name, inner, outside)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _links(tree: object) -> bool:
    return tree == "link" or (isinstance(tree, dict) and any(_links(inner) for inner in tree.values()))


@given(st.dictionaries(NAMES, TREES, max_size=4))
@settings(max_examples=150, deadline=None)
def test_a_symlink_anywhere_refuses_the_layer_and_otherwise_the_objects_are_copied_whole(
    objects: dict[str, object],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root, outside, copy = Path(scratch, "upper"), Path(scratch, "outside"), Path(scratch, "copy")
        outside.mkdir()
        (outside / "secret").write_text("secret")
        _make(root / ".git" / "objects", objects, outside)
        if _links(objects):
            with pytest.raises(Replaced, match="is a symlink"):
                GitLayer(_Upper(str(root)))
            return
        with GitLayer(_Upper(str(root))) as layer:
            layer.copy_objects(copy)
        expected = {k: v for k, v in _files(root / ".git" / "objects").items() if k.split("/")[0] != "info"}
        assert _files(copy) == expected
        assert sorted(os.listdir(outside)) == ["secret"]
