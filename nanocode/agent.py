"""The agent loop: ask the model, run its tool calls, repeat until it says the goal is complete."""

import time
from contextlib import suppress
from typing import Any

from nanocode import prompts
from nanocode.budget import Budget, Limits
from nanocode.interfaces import Display, Executor, Message, Model, Recorder
from nanocode.tools import TOOLS, ToolContext, call_tool


class GoalComplete(Exception):
    def __init__(self, answer: str):
        super().__init__(answer)
        self.answer = answer


class Agent:
    """Holds the conversation, which carries over from one goal to the next."""

    def __init__(
        self, model: Model, system: str, limits: Limits, command_timeout: float, display: Display, recorder: Recorder
    ):
        self.model = model
        self.limits = limits
        self.command_timeout = command_timeout
        self.display = display
        self.recorder = recorder
        self.schemas = [tool.schema() for tool in TOOLS]
        self.messages: list[Message] = [{"role": "system", "content": system}]

    def run(self, goal: str, executor: Executor) -> str:
        """Works on the goal until it is complete; budgets and errors end it by exception."""
        self.recorder.record("goal", goal=goal)
        self._append({"role": "user", "content": goal})
        budget = Budget(self.limits)
        try:
            while True:
                budget.before_step()
                self.step(goal, executor, budget)
        except GoalComplete as done:
            self.recorder.record("end", outcome="complete", answer=done.answer, steps=budget.steps, cost=budget.cost)
            return done.answer
        finally:
            self._answer_open_calls()

    def step(self, goal: str, executor: Executor, budget: Budget) -> None:
        started = time.monotonic()
        with self.display.waiting():
            completion = self.model.complete(self.messages, self.schemas)
        budget.add_cost(completion.cost)
        message = completion.message
        calls = _normalise_calls(message, budget.steps)
        self.recorder.record(
            "response",
            message=message,
            cost=completion.cost,
            usage=completion.usage,
            seconds=round(time.monotonic() - started, 4),
        )
        self._append(message)
        if calls:
            if message.get("content"):
                self.display.say(str(message["content"]))
            for call in calls:
                self._run_call(call, executor, budget)
            return
        answer = prompts.completed_answer(message.get("content"))
        if answer is not None:
            raise GoalComplete(answer)
        if message.get("content"):
            self.display.say(str(message["content"]))
        budget.before_continuation()
        self._append({"role": "user", "content": prompts.continuation(goal)})

    def _run_call(self, call: dict[str, Any], executor: Executor, budget: Budget) -> None:
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        name, arguments = function.get("name"), function.get("arguments")
        timeout = max(1.0, min(self.command_timeout, budget.seconds_left()))
        started = time.monotonic()
        result = call_tool(ToolContext(executor, timeout), name, arguments)
        self.recorder.record(
            "tool",
            id=call["id"],
            name=name,
            arguments=arguments,
            result=result,
            seconds=round(time.monotonic() - started, 4),
        )
        self.display.tool(str(name), arguments if isinstance(arguments, str) else str(arguments), result)
        self._append({"role": "tool", "tool_call_id": call["id"], "content": result})

    def _append(self, message: Message) -> None:
        self.messages.append(message)

    def _answer_open_calls(self) -> None:
        """Keeps the conversation valid for the next goal when one ends in the middle of a reply."""
        answered = {m.get("tool_call_id") for m in self.messages if m.get("role") == "tool"}
        last = next((m for m in reversed(self.messages) if m.get("role") == "assistant"), None)
        if last is None:
            return
        for call in last.get("tool_calls") or []:
            with suppress(KeyError, TypeError):
                if call["id"] not in answered:
                    self._append(
                        {
                            "role": "tool",
                            "tool_call_id": call["id"],
                            "content": "ERROR: not run: the goal was stopped before this call",
                        }
                    )


def _normalise_calls(message: Message, step: int) -> list[dict[str, Any]]:
    """Gives every tool call an id the answer can refer to, whatever the model sent."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        message.pop("tool_calls", None)
        return []
    fixed = []
    for index, call in enumerate(calls):
        if not isinstance(call, dict):
            call = {"type": "function", "function": {"name": None, "arguments": None}}
        if not call.get("id") or not isinstance(call["id"], str):
            call["id"] = f"call_{step}_{index}"
        call.setdefault("type", "function")
        fixed.append(call)
    message["tool_calls"] = fixed
    return fixed
