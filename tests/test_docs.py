"""The manual holds: its links resolve, its options page is the code's, and its runnable commands run.

The conventions are in docs/development.md ("The documentation").
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
REGENERATE = "make docs"
RUN_TIMEOUT = 120

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
MARKER = re.compile(r"^<!--\s*(runnable|not runnable:\s*(?P<reason>.*?))\s*-->$")


def _gen_options():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(DOCS))
    try:
        import gen_options

        return gen_options
    finally:
        sys.path.remove(str(DOCS))


# ---------------------------------------------------------------------------- reading the pages


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: markup dropped, lower case, punctuation gone, spaces as '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            yield number, match.group(1)


class Block(NamedTuple):
    page: str
    line: int
    marker: str | None  # "runnable", "not runnable: reason", or None
    reason: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def sh_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        if FENCE.match(line):
            end = next(i for i in range(number + 1, len(lines)) if FENCE.match(lines[i].strip()))
            if line in ("```sh", "```bash", "```shell"):
                before = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
                marker = MARKER.match(before)
                kind = marker.group(1) if marker else None
                reason = (marker.group("reason") or "") if marker else ""
                body = "\n".join(lines[number + 1 : end])
                yield Block(path.relative_to(ROOT).as_posix(), number + 1, kind, reason, body)
            number = end
        number += 1


ALL_BLOCKS = [block for page in PAGES for block in sh_blocks(page)]
RUNNABLE = [block for block in ALL_BLOCKS if block.marker == "runnable"]


# ---------------------------------------------------------------------------- links


def test_the_manual_has_its_pages() -> None:
    wanted = [
        "getting-started",
        "configuration",
        "sandbox",
        "workspaces",
        "security",
        "network",
        "engines",
        "long-goals",
        "batches",
        "transcripts",
        "troubleshooting",
        "benchmark",
        "development",
    ]
    assert sorted(set(wanted) - {p.stem for p in DOCS.glob("*.md")}) == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "README.md is the front door: keep it under 250 lines"
    assert sorted(name for name in wanted if f"docs/{name}.md" not in readme) == [], "the README maps every page"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{page.name}:{number}: {target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{page.name}:{number}: {target}: no heading #{fragment} in {linked.name}")
    assert broken == []


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The host's trust store", "the-hosts-trust-store"),
        ("The isolation, said out loud", "the-isolation-said-out-loud"),
        ("`nanocode batch apply`", "nanocode-batch-apply"),
        ("Engines: Docker, Podman, rootless", "engines-docker-podman-rootless"),
        ("Clusters (Ray)", "clusters-ray"),
        ("snake_case and 9 digits", "snake_case-and-9-digits"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading: str, expected: str) -> None:
    assert anchor(heading) == expected


def test_a_repeated_heading_gets_a_number(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A\n\n## Usage\n\n```sh\n# Usage\n```\n\n## Usage\n", encoding="utf-8")
    assert anchors(page) == {"a", "usage", "usage-1"}


# ---------------------------------------------------------------------------- the options page


def test_the_options_page_is_generated_from_the_code() -> None:
    page = DOCS / "configuration.md"
    assert page.read_text(encoding="utf-8") == _gen_options().render(), (
        f"docs/configuration.md differs from the click options: run `{REGENERATE}` and commit the page"
    )


def _help_of(path: list[str]) -> str:
    from nanocode.cli import cli

    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _command_paths() -> list[list[str]]:
    from nanocode.cli import cli

    return [[]] + [path[1:] for path, _ in _gen_options().commands(cli, ["nanocode"])]


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(["nanocode", *p]))
def test_every_option_and_variable_in_help_is_on_the_page(path: list[str]) -> None:
    shown = _help_of(path)
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", shown)) - {"--help"}
    variables = set(re.findall(r"env var: ([A-Z_][A-Z0-9_]*)", shown))
    missing = sorted(name for name in options | variables if name not in page)
    assert missing == [], f"not in docs/configuration.md: run `{REGENERATE}`"


# Names the code holds that are not settings a user gives.
NOT_SETTINGS = {"NANOCODE_API_KEY": "a name kept out of host commands' environment, like OPENROUTER_API_KEY"}


def test_every_variable_the_code_reads_is_on_the_page() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    named: set[str] = set()
    for source in (ROOT / "nanocode").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        named |= set(re.findall(r"[\"'](NANOCODE_[A-Z0-9_]+)[\"']", text))
        named |= set(re.findall(r"environ(?:\.get\(|\[)[\"']([A-Z][A-Z0-9_]*)[\"']", text))
    missing = sorted(name for name in named - set(NOT_SETTINGS) if name not in page)
    assert missing == [], (
        "variables nanocode reads, missing from docs/configuration.md: add them to OTHER_VARIABLES in "
        f"docs/gen_options.py (or give the option envvar=), then run `{REGENERATE}`"
    )


def test_the_check_names_the_command_that_regenerates_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _gen_options()
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n", encoding="utf-8")
    monkeypatch.setattr(gen, "PAGE", stale)
    monkeypatch.setattr(sys, "argv", ["gen_options.py", "--check"])
    with pytest.raises(SystemExit) as exited:
        gen.main()
    assert REGENERATE in str(exited.value.code)


# ---------------------------------------------------------------------------- shell blocks


def test_every_shell_block_says_whether_it_runs() -> None:
    unmarked = [block.name for block in ALL_BLOCKS if block.marker is None]
    assert unmarked == [], (
        "mark each ```sh block on the line before it: <!-- runnable --> or <!-- not runnable: REASON -->"
    )
    assert [block.name for block in ALL_BLOCKS if block.marker != "runnable" and not block.reason.strip()] == []


def test_the_blocks_not_run_and_why() -> None:
    """The list of what the docs check leaves alone, shown with -rP; each has its reason."""
    for block in ALL_BLOCKS:
        if block.marker != "runnable":
            print(f"{block.name}: not runnable: {block.reason}")
    assert RUNNABLE, "the manual has runnable examples"


def _needs_docker(block: Block) -> bool:
    return "--sandbox" in block.text or "nanocode sandbox" in block.text


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_a_runnable_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if _needs_docker(block):
        request.getfixturevalue("sandbox_image")
    work, home = tmp_path / "work", tmp_path / "home"
    home.mkdir()
    # mktemp's folders go where they are removed after; a short path, as a socket's must be.
    scratch = Path(tempfile.mkdtemp(prefix="nanocode-docs-"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    # The examples name demo/ as the repository has it; they run in a folder of their own, away from any .env.
    shutil.copytree(ROOT / "demo", work / "demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOCODE_") and k not in _SETTINGS}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "HOME": str(home),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TMPDIR": str(scratch),
    }
    try:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.text],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.name} did not finish within {RUN_TIMEOUT} s")
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


_SETTINGS = {"OPENROUTER_API_KEY", "INFERENCE_BASE_URL", "MODEL_NAME"}


def test_the_options_page_generator_reads_click() -> None:
    """The generator walks every command the CLI has: a new command gets a section of its own."""
    from nanocode.cli import cli

    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for path, command in _gen_options().commands(cli, ["nanocode"]):
        shown = path[:-1] if path[-1] == "run" else path
        assert f"## `{' '.join(shown)}`" in page
        assert isinstance(command, click.Command)
