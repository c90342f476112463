"""Resume restores the run's isolation from its transcript, refuses less unless told, and skips damaged records."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanocode import isolation
from nanocode.errors import ConfigError
from nanocode.prompts import HOST, MARKER
from tests.scripted_api import ScriptedAPI, call, message, tools
from tests.test_cli import _env, _nanocode


def _system(api: ScriptedAPI) -> str:
    return str(api.requests[-1]["messages"][0]["content"])


def _refused(*args: str, env: dict[str, str]) -> str:
    done = _nanocode("--resume", *args, env=env)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    return done.stderr


def test_resume_restores_the_sandbox_and_refuses_less_unless_told(
    api: ScriptedAPI, project: Path, tmp_path: Path, sandbox_image: str, no_leftovers: None
) -> None:
    env = _env(tmp_path, INFERENCE_BASE_URL=api.url, MODEL_NAME="scripted")
    api.add(tools(call("shell", {"command": "echo one"})))
    first = _nanocode("--sandbox", "--project", str(project), "--max-steps", "1", "-p", "go on", env=env)
    assert first.returncode == 5, first.stderr
    in_sandbox = _system(api)
    assert HOST not in in_sandbox

    for less, named in [
        (["--no-sandbox"], "--no-sandbox"),
        (["--network", "bridge"], "--network bridge"),
        (["--memory", "8g"], "--memory 8g"),
        (["--allow-host", "example.com"], "--allow-host example.com"),
        (["--writable-root"], "--writable-root"),
    ]:
        line = _refused(*less, env=env)
        assert named in line and isolation.ALLOW in line

    # Told, it goes on with less: on the host, and the model is told so.
    on_host = tmp_path / "on-host"
    api.add(tools(call("shell", {"command": f"touch {on_host}"})))
    host = _nanocode("--resume", "--no-sandbox", isolation.ALLOW, "--max-steps", "1", env=env)
    assert host.returncode == 5, host.stderr
    assert on_host.exists() and _system(api).count(HOST) == 1

    # Not told: the run's own sandbox again, whatever the last resume did.
    in_container = tmp_path / "in-container"
    api.add(tools(call("shell", {"command": f"touch {in_container}"})), message(f"{MARKER} done"))
    done = _nanocode("--resume", env=env)
    assert done.returncode == 0, done.stderr
    assert "as the run was: --sandbox" in done.stderr
    assert not in_container.exists()
    assert _system(api) == in_sandbox


def test_resume_skips_damaged_records_and_says_how_many(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    env = _env(tmp_path, INFERENCE_BASE_URL=api.url, MODEL_NAME="scripted")
    transcript = tmp_path / "run.jsonl"
    api.add(tools(call("shell", {"command": "echo one"}, id="one")))
    first = _nanocode(
        "--project", str(project), "--transcript", str(transcript), "--max-steps", "1", "-p", "g", env=env
    )
    assert first.returncode == 5, first.stderr
    seen = api.requests[-1]["messages"]
    damaged: list[Any] = [
        {"kind": "compact", "steps": 5},
        {"kind": "compact", "steps": [[[1]]]},
        {"kind": "compact", "steps": [[[1, 2, "text"]]]},
        {"kind": "response", "message": "not a message"},
        {"kind": "response", "message": {"role": "assistant", "content": None, "tool_calls": [{"id": 1}]}},
        {"kind": "tool", "id": 3, "result": None},
        {"kind": "drop", "start": "0"},
        {"kind": "goal", "goal": ["g"]},
        {"kind": "prompt", "content": {}},
        [1, 2],
    ]
    with transcript.open("ab") as file:
        file.write(b"".join(json.dumps(record).encode() + b"\n" for record in damaged))
        file.write(b'{"kind": "tool", "id": "one", "result": "\xff\xfe"}\n')  # not UTF-8

    api.add(message(f"{MARKER} done"))
    done = _nanocode("--resume", str(transcript), env=env)
    assert done.returncode == 0, done.stderr
    assert f"{len(damaged) + 1} damaged lines skipped" in done.stderr
    resumed = api.requests[-1]["messages"]
    assert resumed[: len(seen)] == seen
    assert resumed[len(seen) + 1] == {"role": "tool", "tool_call_id": "one", "content": "one\n"}


@pytest.mark.parametrize("damaged", [{"sandbox": "yes"}, {"memory": 5}, {"pids": True}, {"unknown": 1}, []])
def test_a_damaged_isolation_record_is_not_resumed_with_less(tmp_path: Path, damaged: Any) -> None:
    transcript = tmp_path / "run.jsonl"
    start = {"kind": "start", "system": "s", "project": str(tmp_path), "isolation_settings": damaged}
    transcript.write_text(json.dumps(start) + "\n" + json.dumps({"kind": "goal", "goal": "g"}) + "\n")
    line = _refused(str(transcript), env=_env(tmp_path, INFERENCE_BASE_URL="http://127.0.0.1:9"))
    assert "records no system prompt (1 damaged lines skipped): it cannot be resumed" in line


# Generated: whatever was recorded and whatever is given, a resume either refuses, or runs with
# nothing less isolated than the run had unless --resume-less-isolated was given.
NETWORKS = st.sampled_from(["none", "bridge", "mynet"])
HOSTS = st.lists(st.sampled_from(["a.example", "b.example", "c.example"]), unique=True, max_size=3)
OPTIONS = st.fixed_dictionaries(
    {
        "sandbox": st.booleans(),
        "workspace": st.sampled_from(["bind", "overlay"]),
        "network": NETWORKS,
        "allow_hosts": HOSTS,
        "host_ca": st.booleans(),
        "writable_root": st.booleans(),
        "image": st.sampled_from([None, "img:1", "img:2"]),
        "runtime": st.sampled_from([None, "runc", "runsc"]),
        "require_isolation": st.lists(st.sampled_from(["gvisor", "limits", "rootless"]), unique=True).map(sorted),
        "memory": st.sampled_from(["512m", "2g", "2048m", "4g"]),
        "cpus": st.sampled_from([0.5, 1.0, 2.0]),
        "pids": st.sampled_from([64, 512]),
    }
)


@settings(max_examples=400, deadline=None)
@given(OPTIONS, OPTIONS, st.sets(st.sampled_from(isolation.KEYS)), st.booleans())
def test_a_resume_never_runs_with_less_isolation_unless_told(
    recorded: dict[str, Any], options: dict[str, Any], given_keys: set[str], allowed: bool
) -> None:
    options = {**options, "resume_less_isolated": allowed}
    try:
        resumed, restored = isolation.restore(recorded, options, given_keys)
    except ConfigError as exc:
        assert not allowed and isolation.ALLOW in exc.format_message()
        return
    assert set(restored).isdisjoint(given_keys)
    less = [key for key in isolation.KEYS if isolation._looser(key, resumed, recorded)]
    assert allowed or not less, less
    for key in set(isolation.KEYS) - given_keys - {"require_isolation"}:
        assert resumed[key] == recorded[key]  # what was not given is the run's own
    assert set(recorded["require_isolation"]) <= set(resumed["require_isolation"]) or allowed


@pytest.mark.parametrize(
    ("new", "old", "less"),
    [
        ({"network": "none", "allow_hosts": []}, {"network": "bridge", "allow_hosts": []}, False),
        ({"network": "bridge", "allow_hosts": ["a"]}, {"network": "none", "allow_hosts": []}, True),
        ({"network": "bridge", "allow_hosts": ["a"]}, {"network": "none", "allow_hosts": ["a", "b"]}, False),
        ({"network": "none", "allow_hosts": ["a", "c"]}, {"network": "none", "allow_hosts": ["a", "b"]}, True),
        ({"network": "bridge", "allow_hosts": []}, {"network": "none", "allow_hosts": ["a"]}, True),
        ({"network": "mynet", "allow_hosts": []}, {"network": "bridge", "allow_hosts": []}, True),
        ({"memory": "2048m"}, {"memory": "2g"}, False),
        ({"memory": "2049m"}, {"memory": "2g"}, True),
    ],
)
def test_isolation_is_compared_by_what_it_allows(new: dict[str, Any], old: dict[str, Any], less: bool) -> None:
    key = next(iter(new))
    assert isolation._looser(key, new, old) is less
