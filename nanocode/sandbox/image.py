"""The sandbox image: built from sandbox/Dockerfile, tagged by a hash of its build context."""

import contextlib
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from nanocode.errors import ConfigError

REPOSITORY = "nanocode-sandbox"
DEFAULT_BASE = "debian:bookworm-slim"
FAILED = "building the image failed: "
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


def ensure_image(
    client: docker.DockerClient, progress: Callable[[str], None], force: bool = False, bundle: str | None = None
) -> str:
    """The tag of an up-to-date sandbox image, building it if needed; with the host's CA bundle,
    the build's steps trust what the host trusts (a base whose sources are https, behind a
    TLS-inspecting proxy), and the image made keeps only its own trust store."""
    directory = context_dir()
    base = choose_base(client)
    tag = image_tag(directory, base)
    if not force and _exists(client, tag):
        return tag
    progress(f"building the sandbox image {tag} from {base} (once; a minute or two)")
    try:
        built = trusted(
            client, base, bundle, lambda start: _build(client, progress, path=str(directory), buildargs={"BASE": start})
        )
    except ConfigError as exc:
        raise ConfigError(_build_error(str(exc).removeprefix(FAILED), base)) from None
    _tag(client, built, tag)
    return tag


def _tag(client: docker.DockerClient, image_id: str, name: str) -> None:
    """Tags an image `repository:tag`, given apart: Podman refuses a repository holding the tag."""
    repository, version = name, None
    if ":" in name.rsplit("/", 1)[-1]:
        repository, version = name.rsplit(":", 1)
    try:
        client.api.tag(image_id, repository, version)
    except (APIError, DockerException) as exc:
        raise ConfigError(f"tagging the image {name} failed: {first_line(exc)}") from None


def _built_id(chunk: dict[str, Any], built: str) -> str:
    """The image id a build's output names (Docker's aux record, or its last line), else `built`."""
    if "aux" in chunk and isinstance(chunk["aux"], dict):
        return str(chunk["aux"].get("ID", built))
    stream = str(chunk.get("stream", ""))
    return (built or stream.split()[-1]) if stream.startswith("Successfully built ") else built


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


# A build of one's own behind a TLS-inspecting proxy: its RUN steps trust what the host trusts, and
# the image made does not keep that trust (its store is made afresh from its own certificates).
TRUSTING = (
    "FROM {base}\nCOPY host-ca.crt /etc/ssl/certs/ca-certificates.crt\n"
    "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n"
)
RESTORED = (
    "FROM {built}\nUSER root\n"
    "RUN if command -v update-ca-certificates >/dev/null; then update-ca-certificates --fresh >/dev/null; fi\n"
    "ENV NODE_EXTRA_CA_CERTS=\nUSER {user}\n"
)


def build_custom(
    client: docker.DockerClient,
    dockerfile: Path,
    tag: str,
    progress: Callable[[str], None],
    bundle: str | None,
) -> str:
    """Builds a Dockerfile of the user's (its folder the context) with SANDBOX set to nanocode's
    image; with the host's CA bundle, the steps it runs FROM that image trust what the host trusts."""
    sandbox = ensure_image(client, progress, bundle=bundle)
    context = {"path": str(dockerfile.parent), "dockerfile": dockerfile.name}
    built = trusted(
        client, sandbox, bundle, lambda start: _build(client, progress, **context, buildargs={"SANDBOX": start})
    )
    _tag(client, built, tag)
    return tag


def trusted(client: docker.DockerClient, base: str, bundle: str | None, build: Callable[[str], str]) -> str:
    """The id `build` makes FROM the image it is given: `base` itself, or, with the host's CA
    bundle, `base` trusting it; the host's trust is then taken out of the image made again."""
    if not bundle:
        return build(base)
    start = _build_text(client, TRUSTING.format(base=base), {"host-ca.crt": Path(bundle).read_bytes()})
    try:
        built = build(start)
        user = client.api.inspect_image(built)["Config"].get("User") or "root"
        return _build_text(client, RESTORED.format(built=built, user=user), {})
    finally:
        with contextlib.suppress(DockerException):
            client.api.remove_image(start, noprune=False)


def _build_text(client: docker.DockerClient, dockerfile: str, files: dict[str, bytes]) -> str:
    """The id of an image built from a Dockerfile and files given here."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for name, content in {"Dockerfile": dockerfile.encode(), **files}.items():
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(content), 0o644
            archive.addfile(member, io.BytesIO(content))
    data.seek(0)
    return _build(client, lambda line: None, fileobj=data, custom_context=True)


def _build(client: docker.DockerClient, progress: Callable[[str], None], **how: Any) -> str:
    made: list[str] = []
    try:
        return _run_build(client, progress, made, how)
    except ConfigError:
        _remove_made(client, made)
        raise


def _run_build(client: docker.DockerClient, progress: Callable[[str], None], made: list[str], how: Any) -> str:
    """The id built; `made` gets the ids of the steps this build ran (not those it found in the cache)."""
    built, output, ran = "", "", False
    try:
        for chunk in client.api.build(rm=True, forcerm=True, decode=True, **how):
            if "error" in chunk:
                error = str(chunk["error"]).strip().splitlines()[-1]
                said = _telling(output)
                raise ConfigError(f"{FAILED}{error}" + (f" ({said})" if said else ""))
            built = _built_id(chunk, built)
            stream = str(chunk.get("stream", ""))
            output = (output + ANSI.sub("", stream))[-8192:]
            ran = _steps_made(stream, made, ran)
            line = progress_line(stream)
            if line is not None:
                progress(f"  {line}")
    except (APIError, DockerException) as exc:
        raise ConfigError(f"{FAILED}{first_line(exc)}") from None
    if not built:
        raise ConfigError(f"{FAILED}the engine named no image")
    return built


STEP_MADE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def _steps_made(stream: str, made: list[str], ran: bool) -> bool:
    """Docker's classic builder says ` ---> Running in C` for a step it runs, then ` ---> ID` for
    the layer it made; a step from the cache says `Using cache` instead, and its layer is not ours."""
    for line in stream.splitlines():
        if line.startswith(" ---> Running in "):
            ran = True
        elif (found := STEP_MADE.match(line)) is not None:
            if ran:
                made.append(found.group(1))
            ran = False
    return ran


def _remove_made(client: docker.DockerClient, made: list[str]) -> None:
    """A failed build leaves no layer of its own: the steps it ran are removed, last first."""
    for image_id in reversed(made):
        with contextlib.suppress(DockerException):
            client.api.remove_image(image_id, noprune=False)


# The engine's own lines in a build's output, as against what the build's steps said.
ENGINE_LINES = ("Step ", "STEP ", " ---> ", "--->", "Removing intermediate", "Successfully", "COMMIT", "Running in")


ANSI = re.compile(r"\x1b\[[0-9;]*m")
TELLING = re.compile(r"error|fail|problem|certificate|denied|refused|not found", re.IGNORECASE)


def _telling(output: str) -> str:
    """The line of a failed step's output that says why: the first that sounds like an error, else its last."""
    lines = [line.strip() for line in output.splitlines()]
    lines = [line for line in lines if line and not line.startswith(ENGINE_LINES)]
    return next((line for line in lines if TELLING.search(line)), lines[-1] if lines else "")[:300]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
