"""The conversation kept within the model's window: an estimate before each request, compaction past a threshold.

Never compacted: the system prompt (which holds the project instructions), the goal, and the latest turns.
"""

from dataclasses import asdict, dataclass
from typing import Any

from nanocode import prompts
from nanocode.context.compaction import (
    CHARS_PER_TOKEN,
    Edit,
    apply,
    bound_results,
    cut_results,
    fallback_summary,
    recent_start,
    render,
    summarisable,
    summary_edit,
    tokens,
    useless_summary,
)
from nanocode.context.window import Window
from nanocode.errors import EndpointError
from nanocode.interfaces import Display, Message, Model, Recorder

RECENT_SHARE = 0.25  # of the window: the latest turns kept whole
TARGET_SHARE = 0.5  # of the threshold: below it, cutting old results is enough, and compaction does not come back soon
SUMMARY_INPUT_SHARE = 0.5  # of the window: the most the summary request shows of the turns it replaces
TRIM_KEEP = 200  # characters kept at each end of an older result when the summary is not used
RESULT_SHARE = 0.25  # of the window: the most one tool result may take; past it, its head and tail are kept
MIN_SCALE, MAX_SCALE = 0.5, 4.0  # the server's tokens per estimated token: eight to one characters a token
REFUSED_MARGIN = 0.9  # a refused request's size, times this, is the window when the server states none


@dataclass
class Tokens:
    """A goal's token counts, as the endpoint reported them."""

    prompt: int = 0
    completion: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        self.prompt += _count(usage.get("prompt_tokens") or usage.get("input_tokens"))
        self.completion += _count(usage.get("completion_tokens") or usage.get("output_tokens"))
        self.cache_read += _count(details.get("cached_tokens") or usage.get("cache_read_input_tokens"))
        self.cache_write += _count(usage.get("cache_creation_input_tokens") or details.get("cache_write_tokens"))

    def line(self) -> str:
        cache = f" ({self.cache_read:,} read from the cache, {self.cache_write:,} written to it)"
        cached = cache if self.cache_read or self.cache_write else ""
        return f"tokens: {self.prompt:,} prompt{cached}, {self.completion:,} completion"


class Context:
    def __init__(
        self,
        window: Window,
        threshold: float = 0.8,
        summariser: Model | None = None,
        display: Display | None = None,
        recorder: Recorder | None = None,
        overhead: int = 0,
    ):
        self.window = window
        self.threshold = threshold
        self.limit = int(window.tokens * threshold)
        self.summariser = summariser
        self.display = display
        self.recorder = recorder
        self.overhead = overhead  # what each request adds to the messages: the tool schemas
        self.pinned: list[Message] = []
        self.compactions = 0
        self.tokens = Tokens()
        self._anchor = (0, 0)  # (messages sent, the prompt tokens the endpoint said they came to)
        self._counted = (0, 0)  # (messages, the tokens nanocode counts in them): kept up as messages are added
        self._estimate = 0
        self._stuck = False
        # The server's tokens per nanocode's estimated token, from the replies' usage: a goal's text may be
        # digits (more tokens a character) or prose (fewer); four characters a token is only a start.
        self.scale = 1.0
        self._bounded = 0  # the messages before this index hold no result too large for the window

    def start_goal(self, goal: Message) -> None:
        self.pinned = [goal]
        self.compactions = 0
        self.tokens = Tokens()
        self._anchor = self._counted = (0, 0)
        self._stuck = False
        self.scale = 1.0
        self._bounded = 0

    def estimate(self, messages: list[Message]) -> int:
        """The last reply's prompt tokens plus an estimate of what was added since, or nanocode's own count
        if that is more: an endpoint may leave cached tokens out of its count."""
        count, known = self._counted
        if not count or count > len(messages):
            count, known = 0, self.overhead
        self._counted = (len(messages), known + sum(tokens(message) for message in messages[count:]))
        counted = int(self._counted[1] * self.scale)
        sent, reported = self._anchor
        if not sent or sent > len(messages):
            return counted
        return max(counted, reported + int(self.scale * sum(tokens(message) for message in messages[sent:])))

    def fit(self, messages: list[Message]) -> float:
        """Compacts the messages, in place, if they are past the threshold; returns what that cost.
        No single tool result is ever sent larger than its share of the window."""
        self._bound(messages)
        self._estimate = self.estimate(messages)
        return self.compact(messages, "threshold") if self._estimate > self.limit else 0.0

    def observe(self, sent: int, usage: dict[str, Any]) -> None:
        """After a reply to `sent` messages: the endpoint's count corrects the estimate, and calibrates it."""
        self.tokens.add(usage)
        counted = _prompt_tokens(usage)
        raw = self._counted[1] if self._counted[0] == sent else 0
        if counted and raw > 0:
            # Within what text can be (one to eight characters a token): a count outside it is the
            # endpoint's own accounting (a cache left out), not the text's.
            self.scale = min(max(counted / raw, MIN_SCALE), MAX_SCALE)
        self._anchor = (sent, counted or self._estimate)

    def refused(self, refusal: Any, messages: list[Message]) -> None:
        """The server refused the request as longer than its window: what it says of the window is
        kept for the rest of the run (only ever smaller), and what it counted calibrates the estimate."""
        raw = self._full_raw(messages)
        if refusal.requested and raw:
            self.scale = max(self.scale, refusal.requested / raw)
        sent = refusal.requested or self.estimate(messages)
        window = refusal.window or int(sent * REFUSED_MARGIN)
        if window < self.window.tokens:
            said = f"says its window is {window:,} tokens" if refusal.window else f"refused about {sent:,} tokens"
            source = f"{refusal.server}'s refusal"
            self._note(f"context: {refusal.server} {said}: the window is now {window:,} (was {self.window.tokens:,})")
            self.window = Window(window, source)
            self.limit = int(window * self.threshold)
            self._bounded = 0
            if self.recorder:
                self.recorder.record("window", tokens=window, source=source)
        self._bound(messages)

    def _bound(self, messages: list[Message]) -> None:
        """Keeps head and tail of each tool result past its share of the window (checked once per message)."""
        if self._bounded > len(messages):
            self._bounded = 0
        chars = int(self.window.tokens * RESULT_SHARE * CHARS_PER_TOKEN / max(self.scale, 0.1))
        edits = bound_results(messages, self._bounded, chars)
        self._bounded = len(messages)
        if not edits:
            return
        apply(messages, edits)
        self._counted = self._anchor = (0, 0)
        self._note(f"context: {len(edits)} tool result(s) larger than a quarter of the window kept in head and tail")
        if self.recorder:
            self.recorder.record(
                "compact", reason="bound", before=0, after=0, cut=len(edits), summarised=0, steps=[edits]
            )

    def compact(self, messages: list[Message], reason: str) -> float:
        """Cuts old tool results; if that is not enough, summarises the older turns. Returns the summary's cost."""
        before = max(self.estimate(messages), self._estimate)
        # Refused by the endpoint, the window figure was wrong: only the model's last turn is kept whole.
        recent = 0 if reason == "refused" else int(self.window.tokens * RECENT_SHARE / self.scale)
        end = recent_start(messages, [tokens(m) for m in messages], recent)
        cuts = cut_results(messages, end)
        apply(messages, cuts)
        steps: list[list[Edit]] = [cuts] if cuts else []
        after, cost, older = self._full(messages), 0.0, []
        if after > self.limit * TARGET_SHARE or reason == "refused":
            older = summarisable(messages, end, self.pinned)
        if older:
            summary, cost = self._summarise(older)
            trims = [] if summary is not None else cut_results(messages, end, keep=TRIM_KEEP, over=TRIM_KEEP * 2)
            apply(messages, trims)
            steps += [trims] if trims else []
            after = self._full(messages)
            if summary is None and after > self.limit:
                summary = fallback_summary(older, "the summary was not usable, and trimming was not enough")
            if summary is not None:
                edit = summary_edit(messages, end, self.pinned, summary)
                apply(messages, [edit])
                steps.append([edit])
                after = self._full(messages)
        if steps:
            self._anchor, self._counted = (0, 0), (len(messages), after)
        self._estimate = after
        self._report(reason, before, after, len(cuts), len(older), steps)
        return cost

    def _full(self, messages: list[Message]) -> int:
        return int(self._full_raw(messages) * self.scale)

    def _full_raw(self, messages: list[Message]) -> int:
        return self.overhead + sum(tokens(message) for message in messages)

    def _summarise(self, older: list[Message]) -> tuple[str | None, float]:
        """A summary of the older turns; None where the model's was not worth using (the turns are trimmed
        instead, and the transcript says why)."""
        if self.summariser is None:
            return fallback_summary(older, "no model to write one"), 0.0
        text = render(older, int(self.window.tokens * 4 * SUMMARY_INPUT_SHARE))
        request = [{"role": "system", "content": prompts.SUMMARY_SYSTEM}, {"role": "user", "content": text}]
        try:
            completion = self.summariser.complete(request, [])
        except EndpointError as exc:
            self._note(f"context: the summary request failed ({exc.format_message()}); a list of the calls replaces it")
            return fallback_summary(older, "the summary request failed"), 0.0
        self.tokens.add(completion.usage)
        summary = completion.message.get("content")
        why = useless_summary(summary)
        if why:
            self._note(f"context: the summary was not used ({why}): older tool results are trimmed instead")
            if self.recorder:
                self.recorder.record("summary_rejected", reason=why, summary=str(summary or "")[:500])
            return None, completion.cost or 0.0
        assert isinstance(summary, str)
        return summary, completion.cost or 0.0

    def _report(self, reason: str, before: int, after: int, cut: int, summarised: int, steps: list[Any]) -> None:
        if not steps:
            if not self._stuck:  # said once a goal: the latest turns alone are past the threshold
                self._note(f"context: about {before:,} tokens, past {self.limit:,}, and nothing left to compact")
            self._stuck = True
            return
        self.compactions += 1
        done = [f"{cut} old tool results cut"] if cut else []
        done += [f"{summarised} older messages summarised"] if summarised else []
        self._note(f"context: compacted, about {before:,} → {after:,} tokens ({', '.join(done)})")
        if self.recorder:
            self.recorder.record(
                "compact", reason=reason, before=before, after=after, cut=cut, summarised=summarised, steps=steps
            )

    def _note(self, text: str) -> None:
        if self.display:
            self.display.note(text)

    def totals(self) -> dict[str, Any]:
        return {"compactions": self.compactions, "tokens": asdict(self.tokens)}


def _prompt_tokens(usage: dict[str, Any]) -> int:
    """The tokens the request came to: OpenAI's prompt_tokens holds cached ones; Anthropic's input_tokens
    leaves out what was read from or written to the cache."""
    if _count(usage.get("prompt_tokens")):
        return _count(usage.get("prompt_tokens"))
    cached = _count(usage.get("cache_read_input_tokens")) + _count(usage.get("cache_creation_input_tokens"))
    return _count(usage.get("input_tokens")) + cached if _count(usage.get("input_tokens")) else 0


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
