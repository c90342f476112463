"""The host's trust store inside a sandbox with a network: behind a TLS-inspecting proxy, the
sandbox must trust what the host trusts, or every download fails certificate checks."""

import os
from collections.abc import Mapping

from docker.types import Mount

# Where the host's bundle appears inside, and the variables that point the usual tools at it.
INSIDE = "/etc/nanocode/ca-certificates.crt"
VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
)
# The host's own choice first, then the distributions' bundles.
HOST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def host_bundle(environ: Mapping[str, str] = os.environ) -> str | None:
    """The CA bundle the host trusts, resolved to a file, or None where there is none."""
    for candidate in [environ.get(name, "") for name in HOST_VARIABLES] + list(BUNDLES):
        if candidate and os.path.isfile(candidate):
            return os.path.realpath(candidate)
    return None


def mount(bundle: str) -> Mount:
    return Mount(target=INSIDE, source=bundle, type="bind", read_only=True)


def environment() -> dict[str, str]:
    return dict.fromkeys(VARIABLES, INSIDE)
