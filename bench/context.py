"""Section 11: what keeping the conversation within the window costs nanocode itself.

The agent's own work per step with the estimate and compaction, over a long scripted goal whose
tool results are large (so that old results are cut and older turns summarised), against the same
goal with a window so large that nothing is compacted; and one compaction of a 100,000-token
history, the model's reply excluded (the summary comes back at once).
"""

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import NullExecutor, ScriptedServer, TimedModel, expect, ms, timed

from nanocode import prompts
from nanocode.agent import Agent
from nanocode.budget import Limits
from nanocode.context import DEFAULT_WINDOW, Context, Window
from nanocode.display import QuietDisplay
from nanocode.interfaces import CommandResult, Completion, Message
from nanocode.model.openai import OpenAIModel
from nanocode.transcript import Transcript

RESULT = 3000  # characters of each tool result in the long goal
SMALL_WINDOW = 32_000  # tokens: the long goal compacts every few dozen steps
HISTORY_TOKENS = 100_000
SUMMARY = (
    "The goal is to print x many times. So far the shell printed long lines of x at every step, each command "
    "succeeded with exit code 0, no file was written or changed, and no error came up. What remains: carry on "
    "printing until the count is reached, then answer with the completion marker and a one-line summary."
)
ENFORCED = 32_000  # tokens: the window the strict server enforces, never announced to nanocode
DIGITS = " ".join(str(n) for n in range(700))[:RESULT]


class ChattyExecutor(NullExecutor):
    """Every command answers at once with a large output, as a build or a test run would."""

    def run(self, command: str, timeout: float) -> CommandResult:
        return CommandResult("x" * RESULT, "", 0)


class DenseExecutor(NullExecutor):
    """Every command answers with digits: about two characters a token, twice what four a token expects."""

    def run(self, command: str, timeout: float) -> CommandResult:
        return CommandResult(DIGITS, "", 0)


class InstantSummariser:
    """A model that answers the summary request at once: the figure is nanocode's side of a compaction."""

    name = "instant"

    def complete(self, messages: list[Message], tools: list[dict[str, Any]]) -> Completion:
        return Completion({"role": "assistant", "content": SUMMARY})


def section(bench: Any) -> None:
    steps = bench.args.steps
    title = f"11. context: {steps}-step goal with {RESULT // 1000} KB tool results, and one compaction"
    server = ScriptedServer(f"20,F,{steps},F,{steps},F")
    bench.cleanup.push(server.stop)
    system = prompts.system_prompt(bench.project, 120.0, 50_000, prompts.HOST)
    inner = OpenAIModel(server.url, "bench-key", "scripted", retries=0)
    with tempfile.TemporaryDirectory(prefix="nanocode-bench-") as folder:
        transcript = Transcript(Path(folder, "transcript.jsonl"))
        try:

            def goal(window: int) -> tuple[TimedModel, Context]:
                model = TimedModel(inner)
                context = Context(Window(window, "bench"), 0.8, InstantSummariser(), QuietDisplay(), transcript)
                limits = Limits(max_steps=steps + 10, max_continuations=0, max_seconds=3600, max_repeats=steps + 10)
                agent = Agent(model, system, limits, 120.0, QuietDisplay(), transcript, context)
                expect(agent.run("print x, many times", ChattyExecutor()) == "done", "the goal did not complete")
                return model, context

            goal(10_000_000)  # the warm-up goal, 20 steps
            plain, _ = goal(10_000_000)
            compacting, context = goal(SMALL_WINDOW)
        finally:
            transcript.close()
    own = {name: _own(model) for name, model in (("plain", plain), ("compacting", compacting))}
    add = bench.report.add
    add(title, "agent's own work per step, estimate only (no compaction)", "ms", ms(own["plain"]))
    mine = add(title, f"agent's own work per step, {SMALL_WINDOW:,}-token window", "ms", ms(own["compacting"]))
    add(title, f"  compactions in the goal: {context.compactions}", "", [float(context.compactions)])
    add(title, "  the slowest step (one with a compaction)", "ms", [max(own["compacting"]) * 1000])
    mean = statistics.fmean(own["compacting"]) * 1000
    expect(context.compactions > 0, "the long goal never compacted")
    _enforced(bench, title, system)

    history, goal_message = _history(HISTORY_TOKENS)
    copies = iter([list(history) for _ in range(bench.reps + bench.warmup)])
    with tempfile.TemporaryDirectory(prefix="nanocode-bench-") as folder:
        record = Transcript(Path(folder, "transcript.jsonl"))

        def compact() -> int:
            messages = next(copies)
            # The window at whose threshold (80%) the history stands.
            context = Context(Window(HISTORY_TOKENS * 5 // 4, "bench"), 0.8, InstantSummariser(), recorder=record)
            context.start_goal(goal_message)
            context.compact(messages, "threshold")
            return len(messages)

        def check(count: int) -> None:
            expect(count < len(history) // 2, f"the compaction kept {count} of {len(history)} messages")

        try:
            samples = timed(compact, check, bench.reps, bench.warmup)
        finally:
            record.close()
    once = add(title, f"one compaction of a {HISTORY_TOKENS:,}-token history", "ms", ms(samples))
    bench.report.notes.append(
        f"context: the real Agent, OpenAIModel, Context and Transcript against the scripted server, a do-nothing "
        f"executor whose every result is {RESULT} characters; the agent's own work is the time from one model "
        f"call's return to the next one's start, estimate and compactions included (the summary request answered "
        f"at once by a stand-in, so that only nanocode's side is timed). The compaction figure cuts the old "
        f"results and replaces the older turns of a history of {len(history)} messages, its transcript record "
        f"written, the model's reply excluded."
    )
    bench.report.target("(11) agent's own work per step, compacting", mean, "<=", 1, "ms", "mean of steps")
    bench.report.target("(11) agent's own work per step, compacting, median", mine.median, "<=", 1, "ms", "median")
    bench.report.target(
        f"(11) one compaction of {HISTORY_TOKENS // 1000}k tokens", once.median, "<=", 50, "ms", "median"
    )


def _enforced(bench: Any, title: str, system: str) -> None:
    """A goal of dense text against a server that enforces a window it never announces, counting two
    characters a token: nanocode starts from the default window and learns the real one from the refusals."""
    steps = bench.args.steps
    server = ScriptedServer(f"{steps},F", f"{ENFORCED}:2")
    bench.cleanup.push(server.stop)
    model = TimedModel(OpenAIModel(server.url, "bench-key", "scripted", retries=0))
    with tempfile.TemporaryDirectory(prefix="nanocode-bench-") as folder:
        path = Path(folder, "transcript.jsonl")
        transcript = Transcript(path)
        try:
            context = Context(Window(DEFAULT_WINDOW, "default"), 0.8, InstantSummariser(), QuietDisplay(), transcript)
            limits = Limits(max_steps=steps + 10, max_continuations=0, max_seconds=3600, max_repeats=steps + 10)
            agent = Agent(model, system, limits, 120.0, QuietDisplay(), transcript, context)
            expect(agent.run("count, many times", DenseExecutor()) == "done", "the dense goal did not complete")
        finally:
            transcript.close()
        kinds = [json.loads(line) for line in path.read_text().splitlines()]
    refused = sum(1 for r in kinds if r["kind"] == "compact" and r["reason"] == "refused")
    own = _own(model)
    name = f"agent's own work per step, {steps} steps of digits, a {ENFORCED:,}-token window enforced, unannounced"
    bench.report.add(title, name, "ms", ms(own))
    bench.report.add(title, f"  requests refused as too long: {refused}", "", [float(refused)])
    bench.report.add(
        title, f"  the window learnt: {context.window.tokens:,} tokens", "", [float(context.window.tokens)]
    )
    bench.report.target("(11) dense goal, requests refused", float(refused), "<=", 3, "", "count")
    bench.report.target("(11) dense goal, own work per step", statistics.fmean(own) * 1000, "<=", 1, "ms", "mean")


def _own(model: TimedModel) -> list[float]:
    return [model.starts[i + 1] - model.ends[i] for i in range(len(model.starts) - 1)]


def _history(total: int) -> tuple[list[Message], Message]:
    """A conversation of about `total` tokens: tool calls, each with a 4,000-character result."""
    goal: Message = {"role": "user", "content": "the goal"}
    messages: list[Message] = [{"role": "system", "content": "system prompt"}, goal]
    for i in range(total // 1000):
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "shell", "arguments": f'{{"command": "step {i}"}}'},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"{i} " + "y" * 4000})
    return messages, goal
