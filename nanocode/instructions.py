"""Project instructions: AGENTS.md at the top of the project and in the folders down to the current one."""

import os
import stat
from pathlib import Path

from nanocode import prompts

NAME = "AGENTS.md"
LIMIT = 32 * 1024  # bytes, all files together


def find(project: Path, cwd: Path) -> list[Path]:
    """The AGENTS.md files from the project's top down to the current folder (the more specific last)."""
    folders = [project]
    if cwd.is_relative_to(project):
        here = project
        for part in cwd.relative_to(project).parts:
            here = here / part
            folders.append(here)
    return [folder / NAME for folder in folders if _plain_file(folder / NAME, project)]


def _plain_file(path: Path, project: Path) -> bool:
    """A regular file inside the project: a link the sandbox planted must not read a host file into the prompt."""
    try:
        return stat.S_ISREG(path.lstat().st_mode) and path.resolve().is_relative_to(project.resolve())
    except OSError:
        return False


def read(project: Path, cwd: Path) -> tuple[list[str], str]:
    """The names of the files read and their text, together at most LIMIT bytes, with a note where cut."""
    names, parts = [], []
    for path in find(project, cwd):
        try:
            with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as file:
                text = file.read(LIMIT + 1).decode("utf-8", "replace")
        except OSError:
            continue
        names.append(str(path.relative_to(project)))
        parts.append(text if len(names) == 1 else f"({names[-1]}:)\n{text}")
    text = "\n\n".join(parts)
    data = text.encode()
    if len(data) > LIMIT:
        text = data[:LIMIT].decode("utf-8", "ignore") + "\n" + prompts.INSTRUCTIONS_CUT.format(limit=LIMIT // 1024)
    return names, text


def add_to(system: str, project: Path) -> str:
    """The system prompt with the project's instructions, read now, on the host."""
    names, text = read(project, Path.cwd().resolve())
    return prompts.with_instructions(system, names, text)
