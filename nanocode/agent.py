"""The agent loop: ask the model, run its tool calls, repeat until it says the goal is complete."""

import json
import time
from typing import Any

from nanocode import prompts
from nanocode.budget import Budget, Limits
from nanocode.errors import EndpointError
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
        self.messages.append({"role": "user", "content": goal})
        budget = Budget(self.limits)
        start = len(self.messages) - 1
        try:
            while True:
                budget.before_step()
                self.step(goal, executor, budget)
        except EndpointError as exc:
            if exc.status == 400:  # the endpoint refuses what this goal added: later goals go on without it
                del self.messages[start:]
            raise
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
        message = clean_reply(completion.message, budget.steps)
        calls = message.get("tool_calls", [])
        self.recorder.record(
            "response",
            message=message,
            cost=completion.cost,
            usage=completion.usage,
            seconds=round(time.monotonic() - started, 4),
        )
        self.messages.append(message)
        # Tool calls decide whether the turn goes on, whatever finish_reason said.
        answer = None if calls else prompts.completed_answer(message["content"])
        if answer is not None:
            raise GoalComplete(answer)
        if message["content"]:
            self.display.say(message["content"])
        for call in calls:
            self._run_call(call, executor, budget)
        if calls:
            return
        budget.before_continuation()
        self.messages.append({"role": "user", "content": prompts.continuation(goal)})

    def _run_call(self, call: dict[str, Any], executor: Executor, budget: Budget) -> None:
        name, arguments = call["function"]["name"], call["function"]["arguments"]
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
        self.display.tool(name, arguments, result)
        self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})

    def _answer_open_calls(self) -> None:
        """Keeps the conversation valid for the next goal when one ends in the middle of a reply."""
        last = next((i for i in range(len(self.messages) - 1, -1, -1) if self.messages[i]["role"] == "assistant"), None)
        if last is None:
            return
        answered = {m.get("tool_call_id") for m in self.messages[last + 1 :] if m["role"] == "tool"}
        for call in self.messages[last].get("tool_calls", []):
            if call["id"] not in answered:
                self.messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": "ERROR: not run: the goal was stopped"}
                )


def clean_reply(raw: Message, step: int) -> Message:
    """The model's reply as a message every OpenAI-compatible endpoint accepts back, whatever was sent.

    Content that is a list of parts becomes its text; every tool call gets an id,
    a name and arguments that are strings; an empty reply gets a placeholder,
    since an assistant message needs content or tool calls.
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
    message: Message = {"role": "assistant", "content": content or (None if calls else "(empty reply)")}
    if calls:
        message["tool_calls"] = calls
    if raw.get("reasoning_details"):
        message["reasoning_details"] = raw["reasoning_details"]  # some providers need it back with tool calls
    return message
