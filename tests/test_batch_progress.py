"""A batch's live progress: one line per event without a terminal, a table of every goal on one."""

import io

from nanocode.batch.progress import Progress
from nanocode.batch.results import Result


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_each_goal_is_a_line_per_event_through_its_states() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream=stream)
    for goal in ("a", "b", "c"):
        progress.queued(goal)
    assert stream.getvalue() == ""  # the batch's first line says how many goals there are
    assert progress.totals().startswith("0/3 done, 3 queued, $0.0000")
    progress.preparing("a", "tcp://engine-1")
    progress.preparing("b")
    progress.state("b", "ready")
    assert progress.totals().startswith("0/3 done, 1 ready, 1 preparing, 1 queued,")
    progress.start("a", "tcp://engine-1")
    progress.queued("b", "the Docker engine tcp://engine-2 stopped answering")
    progress.step("a", 0.25)
    assert progress.totals().startswith("0/3 done, 1 running, 2 queued, $0.2500")
    progress.state("a", "closing")
    progress.end(Result("a", "goal a", "/p", "complete", seconds=2.0, steps=1, cost=0.25))
    assert stream.getvalue().splitlines() == [
        "[a] preparing on tcp://engine-1",
        "[b] preparing",
        "[a] started on tcp://engine-1",
        "[b] queued again: the Docker engine tcp://engine-2 stopped answering",
        "[a] complete after 2.0s, 1 steps, $0.2500, 0 files changed",
    ]
    assert progress.totals().startswith("1/3 done, 2 queued, $0.2500,")
    assert "left" in progress.totals()  # one goal of three done: an estimate of the rest


def test_on_a_terminal_the_table_lists_every_state_running_first() -> None:
    stream = Terminal()
    progress = Progress(25, stream=stream)
    for n in range(25):
        progress.queued(f"g{n:02d}")
    progress.preparing("g03")
    progress.start("g07")
    progress.step("g07", 0.5)
    progress.line("an event")  # printed above the table, which is drawn again under it
    table = stream.getvalue().rsplit("\x1b[J", 1)[1].splitlines()
    assert table.pop(0) == "an event"
    assert table[0].split() == ["id", "state", "step", "cost", "elapsed"]
    assert table[1].split()[:4] == ["g07", "running", "1", "0.5000"]
    assert table[2].split()[:2] == ["g03", "preparing"]
    assert table[3].split() == ["g00", "queued", "0", "0.0000", "-"]
    assert table[-2] == "... and 5 more"  # twenty rows at most
    assert table[-1].startswith("0/25 done, 1 running, 1 preparing, 23 queued, $0.5000")
    progress.close()
    assert stream.getvalue().endswith("\x1b[J")  # the table goes before the summary
