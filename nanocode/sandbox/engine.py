"""Connecting to the Docker engine, with one clear line when that fails."""

import os

import docker
from docker.context import ContextAPI
from docker.errors import DockerException

from nanocode.errors import ConfigError


def connect(timeout: float = 60.0) -> docker.DockerClient:
    """A client for DOCKER_HOST, else the current Docker context, else the default socket."""
    try:
        if os.environ.get("DOCKER_HOST"):
            client = docker.from_env(timeout=int(timeout))
        else:
            context = ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT") or None)
            if context is None or context.name == "default" or not context.Host:
                client = docker.from_env(timeout=int(timeout))
            else:
                client = docker.DockerClient(base_url=context.Host, tls=context.TLSConfig, timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise ConfigError(explain(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot use Docker: {exc}") from None
    return client


def explain(exc: BaseException) -> str:
    text = str(exc)
    host = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
    if "Permission denied" in text or "PermissionError" in text:
        return (
            f"permission denied on the Docker socket at {host}: add your user to the 'docker' group, "
            "or point DOCKER_HOST at a rootless Docker or Podman socket (see README)"
        )
    if "No such file or directory" in text or "FileNotFoundError" in text:
        return (
            f"Docker is not running or not installed (no socket at {host}): start the Docker engine, or set DOCKER_HOST"
        )
    if "Connection refused" in text or "Connection aborted" in text:
        return f"the Docker engine at {host} does not answer (connection refused): is it running?"
    return f"cannot use Docker at {host}: {text.splitlines()[0] if text else type(exc).__name__}"


def is_rootless(client: docker.DockerClient) -> bool:
    """A rootless engine (Docker or Podman) maps its root to the user who runs it."""
    try:
        options = client.info().get("SecurityOptions") or []
    except DockerException:
        return False
    return any("rootless" in str(option) for option in options)
