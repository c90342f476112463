"""The agent loop: ask the model, run its tool calls, repeat until it says the goal is complete."""

import json
import time
from collections.abc import Sequence
from typing import Any

from nanocode import prompts
from nanocode.budget import Breaker, Budget, Limits
from nanocode.checks import Check, failure_prompt, run_checks
from nanocode.context import DEFAULT_WINDOW, Context, Window
from nanocode.errors import EndpointError
from nanocode.interfaces import Completion, Display, Executor, Message, Model, Recorder
from nanocode.tools import TOOLS, ToolContext, call_tool

MAX_REFUSED = 3  # requests of one step the server may refuse as too long before the goal ends


class GoalComplete(Exception):
    def __init__(self, answer: str):
        super().__init__(answer)
        self.answer = answer


class Agent:
    """Holds the conversation, which carries over from one goal to the next."""

    def __init__(
        self,
        model: Model,
        system: str,
        limits: Limits,
        command_timeout: float,
        display: Display,
        recorder: Recorder,
        context: Context | None = None,
        checks: Sequence[str] = (),
    ):
        self.model = model
        self.limits = limits
        self.command_timeout = command_timeout
        self.display = display
        self.recorder = recorder
        self.schemas = [tool.schema() for tool in TOOLS]
        self.context = context or Context(
            Window(DEFAULT_WINDOW, "default"), summariser=model, display=display, recorder=recorder
        )
        self.context.overhead = len(json.dumps(self.schemas)) // 4  # the tools go with every request
        self.checks = list(checks)
        self.checked: list[Check] = []
        self.messages: list[Message] = [{"role": "system", "content": system}]

    def run(self, goal: str, executor: Executor) -> str:
        """Works on the goal until it is complete; budgets and errors end it by exception."""
        self.recorder.record("goal", goal=goal)
        self.messages.append({"role": "user", "content": goal})
        return self._work(goal, self.messages[-1], executor)

    def resume(self, messages: list[Message], goal: Message, executor: Executor) -> str:
        """Carries on with a goal whose conversation was rebuilt from a transcript."""
        self.messages = messages
        self._answer_open_calls(prompts.NOT_RUN_STOPPED)
        self._prompt("resume", prompts.resumed(goal["content"]))
        return self._work(goal["content"], goal, executor)

    def _work(self, goal: str, message: Message, executor: Executor) -> str:
        self.context.start_goal(message)
        self.checked = []
        budget, breaker = Budget(self.limits), Breaker(self.limits)
        try:
            while True:
                budget.before_step()
                self.step(goal, executor, budget, breaker)
        except EndpointError as exc:
            if exc.status == 400:  # the endpoint refuses what this goal added: later goals go on without it
                start = next((i for i, m in enumerate(self.messages) if m is message), len(self.messages))
                self.recorder.record("drop", start=start)
                del self.messages[start:]
            raise
        except GoalComplete as done:
            self.recorder.record(
                "end", outcome="complete", answer=done.answer, steps=budget.steps, cost=budget.cost, **self.totals()
            )
            return done.answer
        finally:
            self._answer_open_calls("ERROR: not run: the goal was stopped")
            if self.context.tokens.prompt:  # where the endpoint reports usage
                self.display.note(self.context.tokens.line())

    def totals(self) -> dict[str, Any]:
        """What the end record says beyond the outcome: compactions, tokens, the checks that ran."""
        checks = [{"command": c.command, "exit_code": c.exit_code} for c in self.checked]
        return {**self.context.totals(), "checks": checks}

    def step(self, goal: str, executor: Executor, budget: Budget, breaker: Breaker) -> None:
        started = time.monotonic()
        completion = self._ask(budget)
        message = clean_reply(completion.message, budget.steps)
        calls = message.get("tool_calls", [])
        # An empty reply stays out of the conversation: a placeholder in its place is what a model echoes.
        empty = not message.get("content") and not calls
        self.recorder.record(
            "response",
            message=message,
            cost=completion.cost,
            usage=completion.usage,
            seconds=round(time.monotonic() - started, 4),
            **({"empty": True} if empty else {}),
        )
        if not empty:
            self.messages.append(message)
        # Tool calls decide whether the turn goes on, whatever finish_reason said.
        answer = None if calls else prompts.completed_answer(message["content"])
        if answer is not None:
            return self._verify(answer, executor, budget)
        if message["content"]:
            self.display.say(message["content"])
        for call in calls:
            self._run_call(call, executor, budget, breaker)
        if calls:
            return
        budget.before_continuation()
        self._prompt("continue", prompts.continuation(goal))

    def _ask(self, budget: Budget) -> Completion:
        """One model call, the conversation fitted to the window first. Refused as too long, the request is
        fitted to what the server said and sent again: a few times for a known refusal, once for a 400 that
        only mentions tokens or context."""
        budget.add_cost(self.context.fit(self.messages))
        refused = 0
        while True:
            sent = len(self.messages)
            try:
                completion = self._complete()
                break
            except EndpointError as exc:
                refused += 1
                if exc.refusal is None or refused > (MAX_REFUSED if exc.refusal.certain else 1):
                    raise
                self.context.refused(exc.refusal, self.messages)
                budget.add_cost(self.context.compact(self.messages, "refused"))
        self.context.observe(sent, completion.usage)
        budget.add_cost(completion.cost)
        return completion

    def _complete(self) -> Completion:
        with self.display.waiting():
            return self.model.complete(self.messages, self.schemas)

    def _verify(self, answer: str, executor: Executor, budget: Budget) -> None:
        """The model says the goal is complete: so it is when every check passes; otherwise it goes on."""
        timeout = max(1.0, min(self.command_timeout, budget.seconds_left()))
        self.checked = run_checks(self.checks, executor, timeout, self.display, self.recorder)
        failure = failure_prompt(self.checked)
        if failure is None:
            raise GoalComplete(answer)
        budget.before_continuation()
        self._prompt("check", failure)

    def _prompt(self, reason: str, text: str) -> None:
        """A message of nanocode's own to the model, recorded so that resume rebuilds it."""
        self.recorder.record("prompt", reason=reason, content=text)
        self.messages.append({"role": "user", "content": text})

    def _run_call(self, call: dict[str, Any], executor: Executor, budget: Budget, breaker: Breaker) -> None:
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        timeout = max(1.0, min(self.command_timeout, budget.seconds_left()))
        started = time.monotonic()
        with self.display.running() as watch:
            result = breaker.see(name, arguments, call_tool(ToolContext(executor, timeout, watch), name, arguments))
        self._answer(call, result, round(time.monotonic() - started, 4))
        self.display.tool(name, arguments, result)
        breaker.check()

    def _answer(self, call: dict[str, Any], result: str, seconds: float) -> None:
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        self.recorder.record("tool", id=call["id"], name=name, arguments=arguments, result=result, seconds=seconds)
        self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})

    def _answer_open_calls(self, result: str) -> None:
        """Keeps the conversation valid for the next goal when one ends in the middle of a reply."""
        last = next((i for i in range(len(self.messages) - 1, -1, -1) if self.messages[i]["role"] == "assistant"), None)
        if last is None:
            return
        answered = {m.get("tool_call_id") for m in self.messages[last + 1 :] if m["role"] == "tool"}
        for call in self.messages[last].get("tool_calls", []):
            if call["id"] not in answered:
                self._answer(call, result, 0.0)


def clean_reply(raw: Message, step: int) -> Message:
    """The model's reply as a message every OpenAI-compatible endpoint accepts back, whatever was sent.

    Content that is a list of parts becomes its text; every tool call gets an id,
    a name and arguments that are strings; an empty reply has no content (the agent
    keeps it out of the conversation).
    """
    content = raw.get("content")
    if isinstance(content, list):
        content = "".join(
            part if isinstance(part, str) else str(part.get("text") or "")
            for part in content
            if isinstance(part, (str, dict))
        )
    elif content is not None and not isinstance(content, str):
        content = str(content)
    calls: list[dict[str, Any]] = []
    raw_calls = raw.get("tool_calls")
    for index, call in enumerate(raw_calls if isinstance(raw_calls, list) else []):
        call = call if isinstance(call, dict) else {}
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else json.dumps(arguments)
        name = function.get("name")
        given = call.get("id")
        unique = isinstance(given, str) and given and all(given != c["id"] for c in calls)
        calls.append(
            {
                "id": given if unique else f"call_{step}_{index}",
                "type": "function",
                "function": {"name": name if isinstance(name, str) else "", "arguments": arguments},
            }
        )
    message: Message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    if raw.get("reasoning_details"):
        message["reasoning_details"] = raw["reasoning_details"]  # some providers need it back with tool calls
    return message
