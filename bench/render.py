"""The benchmark's report as a table on stdout, and as JSON."""

import json
from pathlib import Path

from common import (
    Report,
)


def number(value: float, unit: str) -> str:
    if unit == "":
        return f"{value:g}"
    if unit == "x":
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def render(report: Report, elapsed: float) -> str:
    m = report.machine
    s = report.settings
    out = [
        "nanocode benchmark",
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory']} RAM, kernel {m['kernel']}, Docker {m['docker']}",
        f"python:  {m['python']}; load average at the start {m['load']}",
        f"image:   {s.get('image', '?')}",
        f"runs:    median and p90 of {s['reps']} repetitions after {s['warmup']} warm-up, variants interleaved; "
        f"timeout test {s['timeout_reps']} repetitions after 1 warm-up; agent loop {s['steps']} steps"
        + ("  [--quick: a smoke run, not a measurement]" if s["quick"] else ""),
        "",
    ]
    width = max(len(f.label) for f in report.figures) + 2 if report.figures else 40
    header = f"  {'':{width}} {'median':>10} {'p90':>10} {'n':>5}"
    section = ""
    for figure in report.figures:
        if figure.section != section:
            section = figure.section
            out.extend([section, header] if not out[-1].startswith("  ") else ["", section, header])
        line = f"  {figure.label:{width}} {number(figure.median, figure.unit):>10} "
        line += f"{number(figure.p90, figure.unit):>10} {len(figure.samples):>5}"
        if figure.note:
            line += f"   {figure.note}"
        out.append(line)
    out.extend(["", "targets"])
    for t in report.targets:
        verdict = "PASS" if t.passed else "MISS"
        out.append(
            f"  {verdict}  {t.label:48} {number(t.value, t.unit):>10}  (target {t.op} {number(t.limit, t.unit)}; "
            f"{t.basis})"
        )
    if report.notes:
        out.extend(["", "notes"])
        out.extend(f"  - {note}" for note in report.notes)
    passed = sum(t.passed for t in report.targets)
    out.extend(["", f"{passed}/{len(report.targets)} targets met; the benchmark took {elapsed:.0f} s"])
    return "\n".join(out)


def write_json(path: str, report: Report, elapsed: float) -> None:
    data = {
        "machine": report.machine,
        "settings": report.settings,
        "figures": [f.as_json() for f in report.figures],
        "targets": [t.as_json() for t in report.targets],
        "notes": report.notes,
        "elapsed_seconds": elapsed,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
