"""What `--allow-host` names: hosts, wildcards, `*`, IP addresses and CIDR blocks, each with a port
or not, and presets for common needs. A malformed rule is a usage error (exit 2): the rules are
parsed by the proxy's own Rule, so what is accepted here is what the proxy enforces."""

from nanocode.egress.proxy import Rule
from nanocode.errors import UsageError

# The hosts each preset expands to; the README lists them too.
PRESETS = {
    "@python": ["pypi.org", "files.pythonhosted.org"],
    "@npm": ["registry.npmjs.org", "registry.yarnpkg.com"],
    "@debian": ["deb.debian.org", "security.debian.org", "ftp.debian.org"],
    "@github": [
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "raw.githubusercontent.com",
        "objects.githubusercontent.com",
        "release-assets.githubusercontent.com",
        "github-releases.githubusercontent.com",
    ],
}


def expand(values: list[str] | tuple[str, ...]) -> list[str]:
    """The rules for the values given (each may hold several, comma-separated), presets expanded,
    each checked, in order, without repeats."""
    rules: list[str] = []
    for value in values:
        parts = [part.strip() for part in value.split(",")]
        if not any(parts):
            raise UsageError(f"--allow-host {value!r}: an empty rule (name a host, *.domain, an address or @preset)")
        for item in parts:
            if not item:
                continue
            for rule in _one(item):
                if rule not in rules:
                    rules.append(rule)
    return rules


def _one(item: str) -> list[str]:
    if item.startswith("@"):
        if item.lower() not in PRESETS:
            raise UsageError(f"--allow-host {item}: no such preset (there are {', '.join(PRESETS)})")
        return PRESETS[item.lower()]
    try:
        Rule(item)
    except ValueError as exc:
        raise UsageError(f"--allow-host {item}: {exc}") from None
    return [item.lower()]
