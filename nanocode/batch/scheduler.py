"""The one interface between a batch and where its goals run: local engines, or a Ray cluster."""

from typing import Protocol

from nanocode.batch.state import Planned


class Scheduler(Protocol):
    """Runs a batch's goals somewhere, recording each goal's result in the batch's state as it ends."""

    def start(self, todo: list[Planned]) -> None:
        """Starts running the goals, in order, and returns at once."""

    def busy(self) -> bool:
        """True while a goal is still to run, running, or having its change set kept."""

    def interrupt(self) -> None:
        """Ends every goal at once (their sandboxes removed), keeping what each did."""

    def sweep(self) -> None:
        """Removes whatever the batch still has where its goals ran."""

    def unreachable(self) -> str:
        """Why no goal can start any more (every engine or node gone), or ""."""
