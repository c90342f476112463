"""Section 7: the agent loop, many scripted steps with do-nothing tools over real HTTP."""

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from common import (
    OUTPUT_CAP,
    NullExecutor,
    ScriptedServer,
    TimedModel,
    expect,
    ms,
    timed,
)
from harness import Bench

from nanocode import prompts
from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.display import QuietDisplay
from nanocode.interfaces import Message, Model
from nanocode.model.openai import OpenAIModel
from nanocode.prompts import MARKER
from nanocode.transcript import Transcript


def section(bench: Bench) -> None:
    agent_loop(bench)


def agent_loop(bench: Bench) -> None:
    steps, warm_steps, bare_count = bench.args.steps, 20, bench.warmup + bench.reps
    section = f"7. agent loop, {steps} scripted steps (do-nothing tools, real HTTP)"
    # Consumed in this order: a warm-up goal, bare round trips, the measured goal, bare round trips.
    server = ScriptedServer(f"{warm_steps},F,{bare_count},{steps},F,{bare_count}")
    bench.cleanup.push(server.stop)
    system = prompts.system_prompt(bench.project, 120.0, OUTPUT_CAP, prompts.HOST)
    inner = OpenAIModel(server.url, "bench-key", "scripted", retries=0)
    http = requests.Session()

    def post(body: bytes) -> Callable[[], None]:
        def call() -> None:
            headers = {"Content-Type": "application/json"}
            response = http.post(server.url + "/chat/completions", data=body, headers=headers, timeout=30)
            expect(response.status_code == 200, f"the scripted server answered {response.status_code}")
            response.json()

        return call

    def request(messages: list[Message], schemas: list[dict[str, Any]]) -> str:
        return json.dumps({"model": inner.name, "messages": messages, "tools": schemas, "max_tokens": 8192})

    with tempfile.TemporaryDirectory(prefix="nanocode-bench-") as folder:
        transcript = Transcript(Path(folder, "transcript.jsonl"))

        def goal(model: Model) -> tuple[Agent, float]:
            # Every step is the same do-nothing call: the loop breaker must not stop it.
            limits = Limits(max_steps=steps + 10, max_continuations=0, max_seconds=3600, max_repeats=steps + 10)
            agent = Agent(model, system, limits, 120.0, QuietDisplay(), transcript)
            started = time.perf_counter()
            answer = agent.run("do nothing, many times", NullExecutor())
            elapsed = time.perf_counter() - started
            expect(answer == "done", f"the agent answered {answer!r}")
            return agent, elapsed

        try:
            first, _ = goal(inner)  # the warm-up goal
            opening = request(first.messages[:2], first.schemas).encode()
            bare = timed(post(opening), lambda _: None, bench.reps, bench.warmup)
            model = TimedModel(inner)
            agent, total = goal(model)
        finally:
            transcript.close()
    calls = len(model.starts)
    expect(calls == steps + 1, f"{calls} model calls for {steps} steps")
    last = request(agent.messages, agent.schemas)
    encode = timed(lambda: request(agent.messages, agent.schemas), lambda _: None, bench.reps, bench.warmup)
    decode = timed(lambda: json.loads(last), lambda _: None, bench.reps, bench.warmup)
    big = timed(post(last.encode()), lambda _: None, bench.reps, bench.warmup)
    handled = server.handling()
    expect(len(handled) == warm_steps + 1 + 2 * bare_count + calls, f"the server saw {len(handled)} requests")
    bare_server = handled[warm_steps + 1 + bench.warmup : warm_steps + 1 + bare_count]
    main_server = handled[warm_steps + 1 + bare_count : warm_steps + 1 + bare_count + calls]
    big_server = handled[-bench.reps :]

    step = [model.starts[i + 1] - model.starts[i] for i in range(calls - 1)]
    own = [model.starts[i + 1] - model.ends[i] for i in range(calls - 1)]
    call = [model.ends[i] - model.starts[i] for i in range(calls)]
    client = [c - s for c, s in zip(call, main_server, strict=True)]
    bare_client = statistics.median(b - s for b, s in zip(bare, bare_server, strict=True))
    # What nanocode adds to a step beyond the server's own time and a minimal HTTP exchange.
    overhead = [st - sv - bare_client for st, sv in zip(step, main_server, strict=False)]
    tenth = max(1, len(step) // 10)
    add = bench.report.add
    add(section, "per step, whole run (wall / model calls)", "ms", [total / calls * 1000])
    add(section, "per step (one model call's start to the next)", "ms", ms(step))
    add(section, "  the model call (JSON, HTTP, the server)", "ms", ms(call))
    add(section, "    of which the server handling it", "ms", ms(main_server), "timed in the server process")
    add(section, "    of which nanocode's HTTP client and JSON", "ms", ms(client), "the model call less that")
    own_f = add(section, "  the agent's own work (between model calls)", "ms", ms(own))
    add(section, "bare HTTP round trip, first request", "ms", ms(bare), f"{len(opening) // 1024} KB, pre-encoded")
    add(section, "  of which the server", "ms", ms(bare_server))
    add(
        section,
        f"bare HTTP round trip, last request ({len(agent.messages)} messages)",
        "ms",
        ms(big),
        f"{len(last) // 1024} KB, pre-encoded",
    )
    add(section, "  of which the server", "ms", ms(big_server))
    add(section, "json.dumps of the last request (client side)", "ms", ms(encode))
    add(section, "json.loads of the last request (server side)", "ms", ms(decode), "in this process")
    add(section, "loop overhead per step", "ms", ms(overhead), "the step less the server, less a bare client")
    add(section, f"  the first {tenth} steps", "ms", ms(overhead[:tenth]))
    add(section, f"  the last {tenth} steps", "ms", ms(overhead[-tenth:]))
    mean_overhead = statistics.fmean(overhead) * 1000
    bench.report.notes.append(
        f"agent loop: the real Agent, OpenAIModel and Transcript (to a temporary file), a do-nothing executor, "
        f"and tests/scripted_api.py's ScriptedAPI on 127.0.0.1 in a process of its own, timing its handling of "
        f"each request; {steps} tool-call replies, then a {MARKER} reply ({calls} model calls), after a "
        f"{warm_steps}-step warm-up goal. Each request re-sends the whole history, 2 messages longer every step, "
        f"so the model call grows with the step number. The agent's own work is the time from one model call's "
        f"return to the next one's start (parse the reply, run the tool, write the transcript, check the budget). "
        f"Loop overhead per step = the step less the server's handling of its request, less the client side of a "
        f"bare round trip (bare round trip less its server handling, median): what nanocode adds to a minimal "
        f"HTTP exchange, the JSON encoding of the growing history included."
    )
    bench.report.target("(7) agent's own work per step", own_f.median, "<=", 1, "ms", "median of steps")
    bench.report.target("(7) loop overhead per step", mean_overhead, "<=", 1, "ms", "mean over all steps")
    bench.report.target(
        f"(7) loop overhead per step, last {tenth}",
        statistics.fmean(overhead[-tenth:]) * 1000,
        "<=",
        1,
        "ms",
        "mean",
    )
