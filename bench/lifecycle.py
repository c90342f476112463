"""Section 4: a goal's sandbox up and down, against a bare `docker run --rm`."""

import uuid

from common import (
    OUTPUT_CAP,
    interleaved,
    ms,
    sandbox_arguments,
)
from harness import Bench

from nanocode.sandbox.executor import SandboxExecutor


def section(bench: Bench) -> None:
    up_and_down(bench)


def up_and_down(bench: Bench) -> None:
    section = "4. a goal's sandbox up and down"
    bare = sandbox_arguments(bench.config)
    bare.pop("stdin_open", None)
    image = bare.pop("image")

    def up_down() -> None:
        executor = SandboxExecutor(bench.client, bench.config, OUTPUT_CAP)
        executor.close()

    def docker_run() -> None:
        arguments = {**bare, "name": f"nanocode-bench-{uuid.uuid4().hex[:12]}", "command": ["true"]}
        bench.client.containers.run(image, remove=True, **arguments)

    samples = interleaved({"up_down": up_down, "docker_run": docker_run}, bench.reps, bench.warmup)
    ours = bench.report.add(section, "SandboxExecutor(...) then .close()", "ms", ms(samples["up_down"]))
    base = bench.report.add(
        section,
        "docker run --rm (same config) true",
        "ms",
        ms(samples["docker_run"]),
        "containers.run(image, ['true'], remove=True) with the arguments of nanocode's create()",
    )
    bench.report.target(
        "(4) sandbox up+down / docker run --rm", ours.median / base.median, "<=", 1.3, "x", "ratio of medians"
    )
