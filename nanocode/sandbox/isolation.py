"""The isolation a sandbox container really has, said out loud at the start of each goal, and the
floor that --require-isolation sets under it (fail-closed: what cannot be confirmed is below it)."""

from dataclasses import asdict, dataclass, field
from typing import Any

from nanocode.errors import ConfigError
from nanocode.sandbox.engine import Facts


@dataclass
class Isolation:
    runtime: str  # the OCI runtime's name at the engine
    gvisor: bool
    rootless: bool
    userns: str  # user-namespace remapping: "none", "rootless", "remapped", a mode
    seccomp: str
    mac: str  # the AppArmor or SELinux profile, or "none"
    limits: str  # as enforced: "memory 2g, 2 CPUs, 512 processes"
    unenforced: list[str]
    network: str
    engine: str
    container: str = ""  # its name
    fallbacks: list[str] = field(default_factory=list)  # what the runtime in it does without (its hello)

    def line(self) -> str:
        kernel = "gVisor" if self.gvisor else "the host kernel"
        limits = f"limits {self.limits}" if self.limits else "no limits"
        if self.unenforced:
            limits += f" (NOT enforced: {', '.join(self.unenforced)})"
        parts = [
            f"isolation: sandbox {self.container}, {self.engine}, runtime {self.runtime} ({kernel})",
            "rootless" if self.rootless else "rootful",
            f"user namespace {self.userns}",
            f"seccomp {self.seccomp}",
            self.mac,
            limits,
            f"network {self.network}",
        ]
        if self.fallbacks:
            parts.append(f"runtime fallbacks: {'; '.join(self.fallbacks)}")
        return ", ".join(parts)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def observe(facts: Facts, inspected: dict[str, Any], limits: str, fallbacks: list[str]) -> Isolation:
    """From the engine's facts and the container's inspect (what was really applied to it)."""
    host = inspected.get("HostConfig") or {}
    runtime = str(host.get("Runtime") or facts.default_runtime)
    if runtime == "oci":  # Podman's inspect names no runtime
        runtime = facts.default_runtime
    gvisor = is_gvisor(facts, runtime)
    return Isolation(
        runtime=runtime,
        gvisor=gvisor,
        rootless=facts.rootless,
        userns=_userns(facts, host),
        seccomp=_seccomp(facts, host) + (" (gVisor applies it only with --oci-seccomp)" if gvisor else ""),
        mac=_mac(inspected),
        limits=limits,
        unenforced=list(facts.unenforced),
        network=str(host.get("NetworkMode") or "default"),
        engine=facts.product,
        container=str(inspected.get("Name") or "").lstrip("/"),
        fallbacks=list(fallbacks),
    )


def is_gvisor(facts: Facts, runtime: str) -> bool:
    return runtime == "runsc" or facts.runtime_paths.get(runtime, "").endswith("runsc")


def _userns(facts: Facts, host: dict[str, Any]) -> str:
    if host.get("UsernsMode") and host["UsernsMode"] not in ("host", ""):
        return str(host["UsernsMode"])
    if any("name=userns" in option for option in facts.security):
        return "remapped"
    return "rootless" if facts.rootless else "none"


def _seccomp(facts: Facts, host: dict[str, Any]) -> str:
    for option in host.get("SecurityOpt") or []:
        if str(option).startswith("seccomp"):
            return str(option).split("=", 1)[-1].split(":", 1)[-1]
    for option in facts.security:
        if "name=seccomp" in option:
            return option.split("profile=", 1)[1] if "profile=" in option else "default"
    return "none"


def _mac(inspected: dict[str, Any]) -> str:
    if inspected.get("AppArmorProfile"):
        return f"AppArmor {inspected['AppArmorProfile']}"
    if inspected.get("ProcessLabel"):
        return f"SELinux {inspected['ProcessLabel']}"
    return "no AppArmor or SELinux profile"


def require(isolation: Isolation, wanted: list[str]) -> None:
    """Refuses a sandbox below what was asked for, with what it has instead."""
    missing = []
    if "gvisor" in wanted and not isolation.gvisor:
        missing.append(f"gvisor (the runtime is {isolation.runtime}; try --runtime runsc)")
    if "rootless" in wanted and not isolation.rootless:
        missing.append(f"rootless ({isolation.engine} runs as root)")
    if "limits" in wanted and isolation.unenforced:
        missing.append(f"limits ({isolation.engine} does not enforce {', '.join(isolation.unenforced)})")
    if missing:
        raise ConfigError(f"refusing to run the goal below the isolation required: {'; '.join(missing)}")
