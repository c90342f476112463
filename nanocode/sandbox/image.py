"""The sandbox image: built from sandbox/Dockerfile, tagged by a hash of its build context."""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from nanocode.errors import ConfigError

REPOSITORY = "nanocode-sandbox"
DEFAULT_BASE = "debian:bookworm-slim"
# Built from Debian's packages by `make sandbox-base` where no registry can be reached.
LOCAL_BASE = "nanocode/base:bookworm"


def context_dir() -> Path:
    """sandbox/ of a source checkout, or the copy packed into an installed wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_image", package.parent / "sandbox"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise ConfigError("the sandbox Dockerfile is missing from this installation of nanocode")


def choose_base(client: docker.DockerClient) -> str:
    chosen = os.environ.get("NANOCODE_SANDBOX_BASE")
    if chosen:
        return chosen
    for base in (DEFAULT_BASE, LOCAL_BASE):
        if _exists(client, base):
            return base
    return DEFAULT_BASE


def image_tag(directory: Path, base: str) -> str:
    digest = hashlib.sha256(base.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def ensure_image(client: docker.DockerClient, progress: Callable[[str], None], force: bool = False) -> str:
    """The tag of an up-to-date sandbox image, building it if needed."""
    directory = context_dir()
    base = choose_base(client)
    tag = image_tag(directory, base)
    if not force and _exists(client, tag):
        return tag
    progress(f"building the sandbox image {tag} from {base} (once; a minute or two)")
    try:
        for chunk in client.api.build(
            path=str(directory), tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True, decode=True
        ):
            if "error" in chunk:
                raise ConfigError(_build_error(str(chunk["error"]).strip(), base))
            line = progress_line(str(chunk.get("stream", "")))
            if line is not None:
                progress(f"  {line}")
    except (APIError, DockerException) as exc:
        raise ConfigError(_build_error(str(exc), base)) from None
    return tag


def progress_line(stream: str) -> str | None:
    """A build step, as Docker ("Step 1/5 : ...") and Podman ("STEP 1/5: ...") write it; else None."""
    line = stream.strip()
    return line if line.startswith(("Step ", "STEP ")) else None


def _build_error(text: str, base: str) -> str:
    if base == DEFAULT_BASE and (
        "pull access" in text or "not found" in text or "lookup" in text or "dial tcp" in text or "manifest" in text
    ):
        return (
            f"building the sandbox image failed: the base image {base} cannot be pulled; "
            "build a local base from Debian's packages with `make sandbox-base`"
        )
    return f"building the sandbox image failed: {text.splitlines()[-1] if text else 'unknown error'}"


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    except DockerException:
        return False
    return True
