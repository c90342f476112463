"""The batch's resources: running sandboxes never add up to more memory or CPUs than the totals."""

import os
import re
import threading

from nanocode.errors import ConfigError

UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)


def size(text: str) -> int:
    """Bytes in a size such as 512m or 2g."""
    match = SIZE.match(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not a size such as 512m or 2g")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_cpus() -> int:
    return os.cpu_count() or 1


class Ledger:
    """What the running sandboxes hold; a goal waits here until there is room for its own."""

    def __init__(self, memory: int, cpus: float):
        self.memory = memory
        self.cpus = cpus
        self.used_memory = 0
        self.used_cpus = 0.0
        self._room = threading.Condition()

    def take(self, memory: int, cpus: float, stop: threading.Event) -> bool:
        """Waits for room; False when the batch stops first."""
        cpus = min(cpus, self.cpus)  # a CPU limit above the total is a cap, not a reservation
        with self._room:
            while not stop.is_set():
                if self.used_memory + memory <= self.memory and self.used_cpus + cpus <= self.cpus + 1e-9:
                    self.used_memory += memory
                    self.used_cpus += cpus
                    return True
                self._room.wait(0.2)
        return False

    def give(self, memory: int, cpus: float) -> None:
        with self._room:
            self.used_memory -= memory
            self.used_cpus -= min(cpus, self.cpus)
            self._room.notify_all()
