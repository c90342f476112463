"""nanocode's benchmark: what a tool call, a sandbox and the agent loop cost, against the usual baselines.

    make bench ARGS="[--quick] [--json PATH] [--only DIGITS]"   (the project's venv)
    python bench/bench.py [--quick] [--json PATH] [--only DIGITS]

Every figure is the median and p90 (nearest rank) of its repetitions, taken after a warm-up, and
every target is judged on figures of the same run. Variants that are compared with each other are
measured interleaved (round robin), so that drift of the machine hits both sides alike.

Every container the benchmark starts carries the owner labels of nanocode (this process's pid);
whatever happens, Ctrl-C and SIGTERM included, the benchmark removes them before it exits.
"""

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType

from common import (
    OUTPUT_CAP,
    BenchError,
    Cleanup,
    Report,
    machine,
)
from docker.errors import DockerException
from harness import Bench
from others import Others
from render import render, write_json

from nanocode.errors import NanocodeError
from nanocode.sandbox import engine

# The sections in the order they run, by the --only names that select them (a digit or a name). Each
# is a module beside this one with a `section(bench)` function: adding one is a module and a line here.
SECTIONS: dict[str, str] = {
    "1": "commands",  # 1 and 2 are one section
    "5": "timeout",
    "6": "output",
    "3": "files",
    "4": "lifecycle",
    "7": "loop",
    "8": "startup",
    "workspace": "workspace",
    "batch": "batch",
    "context": "context",
    "egress": "egress",
    "ray": "ray",
}
NAMED = [name for name in SECTIONS if not name.isdigit()]


def run(bench: Bench) -> None:
    only = bench.args.only
    if "2" in only:
        only.add("1")
    for name, module in SECTIONS.items():
        if name in only:
            importlib.import_module(module).section(bench)
        if name == "6":
            bench.end_goal()  # the goal's sandbox of sections 1, 2, 5 and 6 goes before the others run


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 30; 5 with --quick)")
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help=f"run only these parts, e.g. 17 or 5,{next(iter(NAMED), 'NAME')} (default: all)",
    )
    args = parser.parse_args(argv)
    args.only = set((args.only or ",".join(["12345678", *NAMED])).split(","))
    digits = {part for part in args.only if part not in NAMED}
    if not all(part.isdigit() and set(part) <= set("12345678") for part in digits):
        parser.error(f"--only takes digits 1 to 8 and the names {', '.join(NAMED)}, separated by commas")
    args.only = set("".join(digits)) | (args.only - digits)
    if args.reps is None:
        args.reps = 5 if args.quick else 30
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    args.warmup = 1 if args.quick else 3
    args.timeout_reps = 2 if args.quick else 5
    args.steps = 100 if args.quick else 1000
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    started = time.perf_counter()
    try:
        client = engine.connect(timeout=30)
    except NanocodeError as exc:
        print(f"bench: Docker is not reachable: {exc.format_message()}", file=sys.stderr)
        return 2
    report = Report(
        machine(client),
        {
            "reps": args.reps,
            "warmup": args.warmup,
            "timeout_reps": args.timeout_reps,
            "steps": args.steps,
            "quick": args.quick,
            "output_cap": OUTPUT_CAP,
        },
    )
    cleanup = Cleanup(client)
    code = 0
    watch = Others().start()
    with terminate_as_interrupt():
        try:
            run(Bench(client, args, report, cleanup))
        except KeyboardInterrupt:
            print("bench: interrupted; removing what it started", file=sys.stderr)
            code = 130
        except (NanocodeError, BenchError) as exc:
            message = exc.format_message() if isinstance(exc, NanocodeError) else str(exc)
            print(f"bench: {message}", file=sys.stderr)
            code = 1
        except DockerException as exc:
            print(f"bench: Docker failed: {engine.explain(exc)}", file=sys.stderr)
            code = 1
        finally:
            others = watch.stop()
            left = cleanup.run()
            if left:
                print(f"bench: removed containers left by an interrupted step: {', '.join(left)}", file=sys.stderr)
    if code:
        return code
    elapsed = time.perf_counter() - started
    report.in_order()
    report.settings["other_containers_during_run"] = others
    report.notes.append(
        f"load average at the end: {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}; containers created by others "
        f"on this Docker engine during the run: {len(others)}"
        + (
            f" ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): figures may be disturbed"
            if others
            else ""
        )
    )
    print(render(report, elapsed))
    if args.json:
        write_json(args.json, report, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
