"""The settings of a run: the command line's options, checked, with the environment's and .env's."""

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nanocode import isolation, resume
from nanocode.budget import Limits
from nanocode.egress import allowlist
from nanocode.errors import ConfigError

MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


@dataclass
class Settings:
    model: str
    base_url: str
    api_key: str | None
    project: Path
    sandbox: bool
    image: str | None
    memory: str
    cpus: float
    pids: int
    network: str
    allow_hosts: list[str]
    host_ca: bool
    runtime: str | None
    require_isolation: list[str]
    command_timeout: float
    output_cap: int
    limits: Limits
    max_tokens: int
    request_timeout: float
    retries: int
    transcript: Path | None
    replay: Path | None
    quiet: bool
    context_window: int | None = None
    compact_threshold: float = 0.8
    compact_model: str | None = None
    prompt_cache: bool = True
    instructions: bool = True
    checks: tuple[str, ...] = ()
    resume: Path | None = None
    workspace: str = "bind"
    apply_changes: bool = False
    writable_root: bool = False
    restored: tuple[str, ...] = ()  # the isolation settings a resumed run took from its transcript

    @classmethod
    def from_options(cls, options: dict[str, Any], given: Collection[str] = ()) -> "Settings":
        """`given`: the options set on the command line or by their variable (the others are defaults)."""
        found = resume.find(options["resume"]) if options["resume"] else None
        options = _normalised(options)
        restored: list[str] = []
        if found:
            options, restored = isolation.restore(resume.isolation_of(found), options, given)
        # A resumed goal goes on in its own project unless told otherwise.
        project = Path(options["project"] or (found and resume.project_of(found)) or Path.cwd()).expanduser()
        if not project.is_dir():
            raise ConfigError(f"the project directory {project} does not exist")
        if options["sandbox"] and not options["project"] and project.resolve() in (Path.home().resolve(), Path("/")):
            raise ConfigError(
                f"refusing to share all of {project} with the sandbox: start nanocode in a project folder, "
                "or name one with --project"
            )
        if options.get("workspace") == "overlay" and not options["sandbox"]:
            raise ConfigError("--workspace overlay needs --sandbox")
        if options.get("apply_changes") and options.get("workspace") != "overlay":
            raise ConfigError("--apply needs --workspace overlay (bind mode changes the project as the goal runs)")
        if options["network"] == "host" or options["network"].startswith("container:"):
            raise ConfigError(
                f"--network {options['network']} would share a namespace with the host or another "
                "container: use none, bridge, or a network of your own"
            )
        _check_base_url(options["base_url"])
        allow_hosts = allowlist.expand(options["allow_hosts"])  # checked again: they may come from a transcript
        if allow_hosts and not options["sandbox"]:
            raise ConfigError("--allow-host works in the sandbox only: add --sandbox")
        sandboxed = ("--runtime", options["runtime"]), ("--require-isolation", options["require_isolation"])
        for name, value in (*sandboxed, ("--require-limits", options["require_limits"])):
            if value and not options["sandbox"]:
                # Fail-closed: without the sandbox, commands would run on the host with no isolation at all.
                raise ConfigError(f"{name} applies to the sandbox: add --sandbox")
        if found and options.get("workspace") == "overlay":
            raise ConfigError(
                "--resume cannot carry an overlay goal's layer into a new one: apply or discard its change set "
                f"(nanocode changes), then resume with --workspace bind {isolation.ALLOW}"
            )
        if not MEMORY.match(options["memory"]):
            raise ConfigError(f"--memory {options['memory']!r} is not a size such as 512m or 2g")
        if not options["api_key"] and not options["replay"]:
            raise ConfigError(
                "OPENROUTER_API_KEY is not set: put it in the environment or in a .env file (see .env.example)"
            )
        names = {f.name for f in cls.__dataclass_fields__.values()}
        values = {k: v for k, v in options.items() if k in names}
        values["project"] = project.resolve()
        for name in ("transcript", "replay"):
            values[name] = Path(options[name]) if options[name] else None
        values["memory"] = options["memory"].lower()
        values["allow_hosts"] = allow_hosts
        values["limits"] = Limits(
            max_steps=options["max_steps"],
            max_continuations=options["max_continuations"],
            max_seconds=options["max_time"],
            max_cost=options["max_cost"],
            repeat_note=options["repeat_note"],
            max_repeats=options["max_repeats"],
        )
        values["checks"] = tuple(check for check in options["checks"] if check.strip())
        values["resume"] = found
        values["restored"] = tuple(restored)
        return cls(**values)


def _normalised(options: dict[str, Any]) -> dict[str, Any]:
    """The isolation options as they are compared and recorded: hosts expanded, requirements as one set."""
    required = set(options["require_isolation"]) | ({"limits"} if options["require_limits"] else set())
    return {
        **options,
        "allow_hosts": allowlist.expand(options["allow_hosts"]),
        "require_isolation": sorted(required),
        "memory": options["memory"].lower(),
        "writable_root": _writable_root(options.get("writable_root"), options["allow_hosts"]),
    }


def _writable_root(given: bool | None, rules: Any) -> bool:
    """Asked for, or by default where the allowlist has @debian: its point is `apt-get install`."""
    if given is not None:
        return given
    return any(rule.strip() == "@debian" for value in rules or () for rule in str(value).split(","))


def _check_base_url(url: str) -> None:
    """A base URL the HTTP client could not use is a setting to fix, found before anything starts."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number, or out of range
        problem = ""
        if any(c.isspace() for c in url):
            problem = "it contains spaces"
        elif parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it names no host"
    except ValueError as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(f"the base URL {url!r} (--base-url, INFERENCE_BASE_URL) is not usable: {problem}")
