"""Section 3: files of 100 KB written and read through the sandbox."""

import random
from pathlib import Path

from common import (
    FILE_CAP,
    FILE_SIZE,
    expect,
    ms,
    timed,
)
from harness import Bench


def section(bench: Bench) -> None:
    files(bench)


def files(bench: Bench) -> None:
    section = "3. files of 100 KB through the sandbox"
    executor = bench.sandbox(FILE_CAP)
    rng = random.Random(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,;:()[]{}=+-*/"
    lines, size = [], 0
    while size < FILE_SIZE:
        line = "".join(rng.choice(alphabet) for _ in range(79)) + "\n"
        lines.append(line)
        size += len(line)
    content = "".join(lines)[:FILE_SIZE]
    host_path = Path(bench.project, "data", "big.txt")

    def written(_: None) -> None:
        expect(host_path.read_bytes() == content.encode(), "write_file: the file on disk differs")

    def read_back(text: str) -> None:
        expect(text == content, f"read_file: got {len(text)} characters that differ from the {FILE_SIZE} written")

    write = timed(lambda: executor.write_file("data/big.txt", content), written, bench.reps, bench.warmup)
    read = timed(lambda: executor.read_file("data/big.txt"), read_back, bench.reps, bench.warmup)
    write_f = bench.report.add(section, "write_file 100 KB", "ms", ms(write), "checked on the host after each")
    read_f = bench.report.add(section, "read_file 100 KB", "ms", ms(read), "compared with what was written")
    executor.close()
    bench.report.target("(3) write_file 100 KB", write_f.median, "<=", 5, "ms", "median")
    bench.report.target("(3) read_file 100 KB", read_f.median, "<=", 5, "ms", "median")
