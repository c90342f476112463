"""Section 8: `nanocode --help` against `python3 -c pass`."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from common import (
    expect,
    interleaved,
    ms,
)
from harness import Bench


def section(bench: Bench) -> None:
    startup(bench)


def startup(bench: Bench) -> None:
    section = "8. start-up"
    script = Path(sys.executable).parent / "nanocode"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nanocode"]
    env = {name: value for name, value in os.environ.items() if not name.startswith("NANOCODE_")}

    def launch(argv: list[str]) -> Callable[[], None]:
        def call() -> None:
            done = subprocess.run(argv, cwd=bench.project, env=env, stdout=subprocess.DEVNULL, check=False)
            expect(done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}")

        return call

    samples = interleaved(
        {
            "help": launch([*command, "--help"]),
            "pass": launch([sys.executable, "-c", "pass"]),
            "click": launch([sys.executable, "-c", "import click"]),
        },
        bench.reps,
        bench.warmup,
    )
    ours = bench.report.add(section, f"{' '.join(Path(c).name for c in command)} --help", "ms", ms(samples["help"]))
    base = bench.report.add(section, "python3 -c pass (same interpreter)", "ms", ms(samples["pass"]))
    click = bench.report.add(section, "  python3 -c 'import click'", "ms", ms(samples["click"]))
    bench.report.notes.append(
        f"floor for (8): importing click alone takes {click.median / base.median:.2f}x python3 -c pass; "
        "click is the CLI's fixed dependency."
    )
    bench.report.notes.append(
        f"start-up: both run by {sys.executable}; an interpreter whose site-packages run .pth hooks at every "
        "start is slower on `-c pass` and flatters the ratio: `make bench` (the project's venv) is the reference."
    )
    bench.report.target("(8) nanocode --help / python3 -c pass", ours.median / base.median, "<=", 3, "x", "ratio")
