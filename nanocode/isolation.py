"""A run's isolation, as its transcript records it, and how `--resume` restores it.

Invariant: a resumed goal runs with at least the isolation its run last had. Every setting below
that was not given on the command line (or by its variable) is taken from the transcript; one given
that isolates less (the sandbox off, a wider network, a higher limit, another image or runtime, a
workspace that changes the project live, a requirement dropped) is refused unless
--resume-less-isolated says so. Settings are compared by what they allow, not by their spelling.
"""

import re
from collections.abc import Callable, Collection
from typing import Any

from nanocode.errors import ConfigError

# The options that make a run's isolation, by their name in the options of a goal.
KEYS = (
    "sandbox",
    "workspace",
    "network",
    "allow_hosts",
    "host_ca",
    "writable_root",
    "image",
    "runtime",
    "require_isolation",
    "memory",
    "cpus",
    "pids",
)
ALLOW = "--resume-less-isolated"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)


def record(options: dict[str, Any]) -> dict[str, Any]:
    """What the transcript keeps of a run's isolation (its start record's `isolation_settings`)."""
    return {key: options[key] for key in KEYS}


def well_formed(recorded: Any) -> bool:
    """Whether a recorded isolation holds only known settings, each of the type nanocode writes: a
    start record that does not is damaged (so its run cannot be resumed, rather than resumed with less)."""
    if not isinstance(recorded, dict):
        return False
    return all(key in _TYPES and _TYPES[key](value) for key, value in recorded.items())


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


_TYPES: dict[str, Callable[[Any], bool]] = {
    "sandbox": lambda value: isinstance(value, bool),
    "workspace": lambda value: value in ("bind", "overlay"),
    "network": lambda value: isinstance(value, str) and bool(value),
    "allow_hosts": _texts,
    "host_ca": lambda value: isinstance(value, bool),
    "writable_root": lambda value: isinstance(value, bool),
    "image": _text_or_none,
    "runtime": _text_or_none,
    "require_isolation": _texts,
    "memory": lambda value: isinstance(value, str) and bool(_SIZE.match(value)),
    "cpus": _number,
    "pids": lambda value: _number(value) and isinstance(value, int),
}


def restore(
    recorded: dict[str, Any], options: dict[str, Any], given: Collection[str]
) -> tuple[dict[str, Any], list[str]]:
    """The options of a resumed run: `recorded` where nothing was given, and what was restored."""
    # Requirements add up: --require-limits given now keeps the run's own requirements too.
    taken = {key: _MERGE.get(key, _recorded)(options[key], recorded[key]) for key in KEYS if key in recorded}
    restored = [key for key, value in taken.items() if key not in given and options[key] != value]
    resumed = {**options, **{key: taken[key] for key in restored}}
    # Judged on what will run: a network given and an allowlist restored make one reach together.
    looser = [key for key in KEYS if key in given and key in recorded and _looser(key, resumed, recorded)]
    if looser and not options.get("resume_less_isolated"):
        named = ", ".join(_flag(key, options) for key in looser)
        raise ConfigError(
            f"--resume: {named} would isolate the goal less than its run did ({_describe(recorded)}): "
            f"add {ALLOW} to allow it"
        )
    return resumed, restored


def _recorded(new: Any, old: Any) -> Any:
    return old


_MERGE: dict[str, Callable[[Any, Any], Any]] = {"require_isolation": lambda new, old: sorted({*new, *(old or ())})}


def _looser(key: str, new: dict[str, Any], old: dict[str, Any]) -> bool:
    if key in ("network", "allow_hosts"):
        return _Reach(new) > _Reach(old)
    return _LOOSER[key](new[key], old[key])


class _Reach:
    """Where a sandbox's network lets it go: nowhere, an allowlist's hosts, or a whole network."""

    def __init__(self, options: dict[str, Any]):
        self.hosts = set(options.get("allow_hosts") or ())
        network = options.get("network") or "none"
        self.network = None if self.hosts or network == "none" else network  # a whole network, by name
        self.nowhere = not self.hosts and self.network is None

    def __gt__(self, other: "_Reach") -> bool:
        """Reaches somewhere `other` does not."""
        if self.nowhere:
            return False
        if other.nowhere:
            return True
        if self.network is None:  # an allowlist: within the other's, or the other reaches a whole network
            return other.network is None and not self.hosts <= other.hosts
        return self.network != other.network


def _bytes(size: Any) -> float:
    found = _SIZE.match(str(size))
    if not found:
        return float("inf")
    number, unit = found.groups()
    return float(number) * 1024.0 ** "bkmg".index((unit or "b").lower())


_LOOSER: dict[str, Callable[[Any, Any], bool]] = {
    "sandbox": lambda new, old: bool(old) and not new,
    "workspace": lambda new, old: old == "overlay" and new != "overlay",
    "host_ca": lambda new, old: bool(new) and not old,
    "writable_root": lambda new, old: bool(new) and not old,
    "image": lambda new, old: new != old,
    "runtime": lambda new, old: new != old and new != "runsc",
    "require_isolation": lambda new, old: not set(old or ()) <= set(new or ()),
    "memory": lambda new, old: _bytes(new) > _bytes(old),
    "cpus": lambda new, old: float(new) > float(old),
    "pids": lambda new, old: int(new) > int(old),
}


def _flag(key: str, options: dict[str, Any]) -> str:
    value = options[key]
    if key == "sandbox":
        return "--sandbox" if value else "--no-sandbox"
    if key == "host_ca":
        return "--host-ca" if value else "--no-host-ca"
    if key == "writable_root":
        return "--writable-root" if value else "--read-only-root"
    if key == "allow_hosts":
        return "--allow-host " + ",".join(value) if value else "no --allow-host"
    if isinstance(value, list | tuple):
        value = ",".join(value) or "none"
    if value is None:
        value = "(the default)"
    return f"--{key.replace('_', '-')} {value}"


def _describe(recorded: dict[str, Any]) -> str:
    if not recorded.get("sandbox"):
        return "on the host"
    network = "allowlist " + ",".join(recorded["allow_hosts"]) if recorded.get("allow_hosts") else None
    parts = ["sandbox", recorded.get("workspace"), f"network {network or recorded.get('network', 'none')}"]
    return ", ".join(str(part) for part in parts if part)


def describe_options(options: dict[str, Any], keys: Collection[str]) -> str:
    """The options named, as one would give them: what a resumed run took from its transcript."""
    return " ".join(_flag(key, options) for key in keys)
