"""Finding the Docker engine and the sandbox image for the tests that need them."""

import os

import pytest

REASON = "no Docker engine answers here (start dockerd, or set DOCKER_HOST)"


def docker_client():  # type: ignore[no-untyped-def]
    """A client, or a skip; with NANOCODE_REQUIRE_DOCKER=1 (CI) a missing engine fails instead."""
    from nanocode.errors import ConfigError
    from nanocode.sandbox import engine

    try:
        return engine.connect(timeout=10)
    except ConfigError as exc:
        if os.environ.get("NANOCODE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker is required here (NANOCODE_REQUIRE_DOCKER=1): {exc}")
        pytest.skip(f"{REASON}: {exc}")


def gvisor_runtime(client) -> str:  # type: ignore[no-untyped-def]
    """runsc, where the engine has it registered as docs/engines.md says (CI sets NANOCODE_TEST_GVISOR=1)."""
    from nanocode.sandbox import engine

    if os.environ.get("NANOCODE_TEST_GVISOR") != "1":
        pytest.skip("gVisor: set NANOCODE_TEST_GVISOR=1 where runsc is registered (see docs/engines.md)")
    if "runsc" not in engine.facts(client).runtimes:
        pytest.fail("NANOCODE_TEST_GVISOR=1, but the engine has no runtime named runsc")
    return "runsc"
