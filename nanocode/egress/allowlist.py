"""What `--allow-host` names: hosts, wildcards, host:port, and presets for common needs."""

from nanocode.egress.proxy import Rule
from nanocode.errors import ConfigError

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
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            for rule in _one(item):
                if rule not in rules:
                    rules.append(rule)
    return rules


def _one(item: str) -> list[str]:
    if item.startswith("@"):
        if item.lower() not in PRESETS:
            raise ConfigError(f"--allow-host {item}: no such preset (there are {', '.join(PRESETS)})")
        return PRESETS[item.lower()]
    try:
        Rule(item)
    except ValueError as exc:
        raise ConfigError(f"--allow-host {item}: {exc}") from None
    return [item.lower()]
