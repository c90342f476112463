"""The user's git identity in the sandbox, so that the commits a goal makes (and apply brings home)
are the user's, not names a model invents.

Only `user.name` and `user.email` cross over, read from the host's git config as a commit in the
project would find them; they enter as the GIT_AUTHOR_*/GIT_COMMITTER_* variables, which also win
over any identity the model passes with `git -c`. Nothing else of the host's config or environment
enters. Where the host has none, a fixed identity keeps `git commit` working in the sandbox.
"""

import os
import subprocess

FALLBACK = {"user.name": "nanocode", "user.email": "nanocode@localhost"}


def git_environment(project: str) -> dict[str, str]:
    """GIT_AUTHOR_NAME/EMAIL and GIT_COMMITTER_NAME/EMAIL: the host's identity, else the fallback."""
    name, email = (_configured(key, project) or FALLBACK[key] for key in ("user.name", "user.email"))
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def _configured(key: str, project: str) -> str | None:
    # The user's own config settings (GIT_CONFIG_GLOBAL and the like) count; what would point git
    # at another repository (GIT_DIR, GIT_WORK_TREE, ...) does not.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k.startswith("GIT_CONFIG")}
    try:
        done = subprocess.run(
            ["git", "config", "--get", key], cwd=project, env=env, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip() if done.returncode == 0 else ""
    return value if value and value.isprintable() else None
