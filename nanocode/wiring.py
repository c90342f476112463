"""A run's wiring: the engine its goals share, and how each goal's workspace and executor are opened
and described to the model, put together from the settings."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nanocode import prompts
from nanocode.interfaces import Executor, Recorder
from nanocode.settings import Settings

if TYPE_CHECKING:
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.sandbox.executor import SandboxExecutor

Note = Callable[[str], None]


class _Unrecorded:
    def record(self, kind: str, **fields: Any) -> None:
        pass


@dataclass
class Engine:
    """What the goals of a run share on one Docker engine: its client, what it says of itself, the image."""

    client: Any
    image: str
    facts: Any  # nanocode.sandbox.engine.Facts


def open_engine(settings: Settings, note: Note, client: Any = None) -> Engine:
    """Connects (unless given a client), removes what killed runs left, and makes sure of the image."""
    from nanocode import cleanup
    from nanocode.egress import trust
    from nanocode.sandbox import engine, image

    client = client or engine.connect()
    facts = engine.facts(client)
    for line in cleanup.remove_leftovers(client, note).lines():
        note(line)
    # Built on first use: behind a TLS-inspecting proxy its steps trust the host, as `sandbox build` does.
    bundle = trust.host_bundle() if settings.host_ca else None
    tag = settings.image or image.ensure_image(client, note, bundle=bundle)
    return Engine(client, tag, facts)


OpenExecutor = Callable[[Any, Note], Executor]  # given the goal's workspace, and where to say what it does
OpenWorkspace = Callable[[str, Note], Any]  # given the goal's id


def executor_factory(
    settings: Settings, engine: Engine | None, note: Note, recorder: Recorder | None = None
) -> tuple[OpenExecutor, OpenWorkspace | None, str]:
    """How to open the executor and the workspace of a goal, and how to describe them to the model.
    `recorder` keeps what the sandbox says of itself (its isolation, its network's connections)."""
    s = settings
    project = str(s.project)
    if not s.sandbox:
        from nanocode.host import HostExecutor

        secrets = [s.api_key] if s.api_key else []
        return lambda workspace, note: HostExecutor(project, s.output_cap, secrets), None, prompts.HOST
    from nanocode.sandbox import engine as engines
    from nanocode.sandbox import identity
    from nanocode.sandbox.container import SandboxConfig
    from nanocode.workspace import workspace

    engine = engine or open_engine(s, note)
    engines.check_runtime(engine.facts, s.runtime, networked=s.network != "none" or bool(s.allow_hosts))
    recorder = recorder or _Unrecorded()
    tag = s.image or engine.image
    config = SandboxConfig(
        project=project,
        image=tag,
        memory=s.memory,
        cpus=s.cpus,
        pids=s.pids,
        network=s.network,
        runtime=s.runtime,
        writable_root=s.writable_root,
    )
    config.environment.update(identity.git_environment(project))  # the user's name and email, nothing else
    if engine.facts.rootless:
        config.user = "0:0"  # the engine's root is the user who runs it: files stay theirs
    ship = _root_for_apt(s, config.user)
    if ship:
        config.user = "0:0"
    if s.writable_root:
        note(_writable_root_line(config.user, ship))
    bundle = _trust(s, config, note)
    start = _sandbox_opener(s, engine, bundle, recorder)

    def open_workspace(goal: str, note: Note) -> Any:
        return workspace.open_workspace(engine.client, project, s.workspace, goal, note, tag, config.user, ship)

    def open_executor(workspace: Any, note: Note) -> Executor:
        return start(replace(config, mounts=workspace.mounts), note)

    return open_executor, open_workspace, _environment(s, tag, config.user, engine.facts, ship)


def _root_for_apt(s: Settings, user: str) -> bool:
    """Whether the commands run as root in the container though nanocode does not: dpkg needs to own the
    image's files, which only root in the container does. Only with a writable root, and in overlay mode,
    where the project is sent to the engine as root's and what changed comes back as the user's (root
    with no capability could not write the user's files in place; bind mode keeps the user's uid)."""
    return s.writable_root and s.workspace == "overlay" and user.split(":")[0] != "0"


def _writable_root_line(user: str, ship: bool = False) -> str:
    """Said at the start: dpkg needs to own the image's files, which only root in the container does."""
    if ship:
        return (
            "sandbox: commands run as root in the container, with no capability, so that apt-get install works "
            "(its root filesystem is writable for the goal); the project is sent to it and comes back as yours"
        )
    if user.split(":")[0] == "0":
        return "sandbox: its root filesystem is writable for the goal, so apt-get install works (--read-only-root: not)"
    return (
        f"sandbox: its root filesystem is writable, but apt-get install needs root in it and commands run as uid "
        f"{user.split(':')[0]} in bind mode: --workspace overlay runs them as root, or add packages to the image "
        "(docs/sandbox.md, adding tools to the image)"
    )


# Who runs the commands where nanocode does not run as root but the sandbox does (_root_for_apt).
ROOT_FOR_APT = "as root (uid 0), with no capability, so that apt-get install works"


def _environment(s: Settings, image: str, user: str, facts: Any, ship: bool = False) -> str:
    """The sandbox as the system prompt describes it: who runs the commands, what it holds, what it lets through."""
    network = prompts.NETWORK_NONE if s.network == "none" else prompts.NETWORK_ON.format(mode=s.network)
    if s.allow_hosts:
        network = prompts.NETWORK_ALLOWLIST.format(hosts=", ".join(s.allow_hosts))
    git = prompts.GIT_OVERLAY if s.workspace == "overlay" else prompts.GIT_BIND
    limits = prompts.limits(s.memory, s.cpus, s.pids, facts.unenforced)
    who = ROOT_FOR_APT if ship else prompts.sandbox_user(user, bool(facts.rootless))
    return prompts.SANDBOX.format(image=image, user=who, limits=limits, network=network, git=git)


def _trust(s: Settings, config: "SandboxConfig", note: Note) -> str | None:
    """The host's CA bundle, for a sandbox with a network (and its proxy), unless --no-host-ca."""
    if not s.host_ca or (s.network == "none" and not s.allow_hosts):
        return None
    from nanocode.egress import trust

    bundle = trust.host_bundle()
    if bundle is None:
        note("no CA bundle found on the host: the sandbox trusts only its own")
        return None
    config.extra_mounts.append(trust.mount(bundle))
    config.environment.update(trust.environment())
    return bundle


def _sandbox_opener(
    s: Settings, engine: Engine, bundle: str | None, recorder: Recorder
) -> Callable[["SandboxConfig", Note], Executor]:
    """A goal's sandbox; on an allowlist, on a network of its own whose only way out is a proxy to the
    allowed hosts (--network names the proxy's way out)."""
    from nanocode.egress.goal import AllowlistedSandbox
    from nanocode.sandbox.executor import SandboxExecutor

    def sandbox(config: "SandboxConfig", note: Note) -> "SandboxExecutor":
        def isolation(found: Any) -> None:
            note(found.line())
            recorder.record("isolation", **found.record())

        return SandboxExecutor(engine.client, config, s.output_cap, note, engine.facts, s.require_isolation, isolation)

    if not s.allow_hosts:
        return sandbox
    outside = "bridge" if s.network == "none" else s.network
    return lambda config, note: AllowlistedSandbox(
        engine.client, config, s.allow_hosts, outside, lambda c: sandbox(c, note), recorder, note, bundle
    )
