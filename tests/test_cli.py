"""The command line, through click's runner and as a real process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nanocode.cli import cli
from nanocode.prompts import MARKER
from tests.scripted_api import ScriptedAPI, call, error, message, tools


def invoke(
    args: list[str], api: ScriptedAPI | None = None, input: str | None = None, env: dict[str, str] | None = None
) -> "CliRunner.invoke":  # type: ignore[valid-type]
    base = {"OPENROUTER_API_KEY": "sk-test"} | ({"INFERENCE_BASE_URL": api.url} if api else {}) | (env or {})
    return CliRunner().invoke(cli, args, input=input, env=base, catch_exceptions=False)


def test_goal_answer_on_stdout_everything_else_on_stderr(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "echo from-the-tool"})), message(f"{MARKER} the answer"))
    result = invoke(["-p", "say it", "--project", str(project)], api)
    assert result.exit_code == 0
    assert result.stdout == "the answer\n"
    assert "→ shell" in result.stderr
    assert "from-the-tool" in result.stderr


def test_goal_from_stdin(api: ScriptedAPI, project: Path) -> None:
    api.add(message(f"{MARKER} read it"))
    result = invoke(["-p", "-", "--project", str(project)], api, input="the goal from stdin\n")
    assert result.exit_code == 0
    # The default model is Anthropic's: the newest message goes as a content part marked for the prompt cache.
    assert api.requests[0]["messages"][1]["content"][0]["text"] == "the goal from stdin"


def test_quiet(api: ScriptedAPI, project: Path) -> None:
    api.add(tools(call("shell", {"command": "echo x"})), message(f"{MARKER} done"))
    result = invoke(["-q", "-p", "g", "--project", str(project)], api)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "done\n", "")


def test_missing_key_is_a_configuration_error(project: Path) -> None:
    result = CliRunner().invoke(cli, ["-p", "g", "--project", str(project)], env={"OPENROUTER_API_KEY": ""})
    assert result.exit_code == 3
    assert result.stderr.strip().count("\n") == 0
    assert "OPENROUTER_API_KEY" in result.stderr and ".env" in result.stderr


@pytest.mark.parametrize(
    ("script", "args", "code", "words"),
    [
        ([error(401, "nope")], [], 4, "API key was refused"),
        ([message("not yet")] * 3, ["--max-continuations", "1"], 5, "max-continuations"),
        ([tools(call("shell", {"command": "true"}))] * 3, ["--max-steps", "2"], 5, "2 model calls"),
        ([], ["--memory", "lots"], 3, "not a size"),
    ],
)
def test_exit_codes(api: ScriptedAPI, project: Path, script: list, args: list[str], code: int, words: str) -> None:
    api.add(*script)
    result = invoke(["-p", "g", "--project", str(project), "--retries", "0", *args], api)
    assert result.exit_code == code, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_project_directory(api: ScriptedAPI, tmp_path: Path) -> None:
    result = invoke(["-p", "g", "--project", str(tmp_path / "nope")], api)
    assert result.exit_code == 3
    assert "does not exist" in result.stderr


def test_dotenv_is_read_and_the_real_environment_and_options_win(
    api: ScriptedAPI, project: Path, tmp_path: Path
) -> None:
    (project / ".env").write_text(
        f"OPENROUTER_API_KEY=from-dotenv\nINFERENCE_BASE_URL={api.url}\nMODEL_NAME=dotenv-model\n"
    )
    api.add(message(f"{MARKER} a"), message(f"{MARKER} b"), message(f"{MARKER} c"))
    env = _env(tmp_path)
    for name in ("OPENROUTER_API_KEY", "INFERENCE_BASE_URL", "MODEL_NAME"):
        env.pop(name, None)
    _nanocode("-p", "g", cwd=project, env=env, check=True)
    env["MODEL_NAME"] = "env-model"
    _nanocode("-p", "g", cwd=project, env=env, check=True)
    _nanocode("-p", "g", "--model", "option-model", cwd=project, env=env, check=True)
    assert [r["model"] for r in api.requests] == ["dotenv-model", "env-model", "option-model"]
    assert api.headers[0]["Authorization"] == "Bearer from-dotenv"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOCODE_", "OPENROUTER", "INFERENCE", "MODEL"))}
    return env | {"XDG_STATE_HOME": str(tmp_path / "state"), "OPENROUTER_API_KEY": "sk-test"} | extra


def _nanocode(
    *args: str, env: dict[str, str], cwd: Path | None = None, input: str | None = None, check: bool = False
) -> "subprocess.CompletedProcess[str]":
    """nanocode as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "nanocode", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_subprocess_multi_step_goal_and_transcript(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(
        tools(call("write_file", {"path": "calc.py", "content": "print(6 * 7)\n"})),
        tools(call("shell", {"command": "python3 calc.py > result.txt && cat result.txt"})),
        message(f"{MARKER} it prints 42"),
    )
    transcript = tmp_path / "run.jsonl"
    done = _nanocode(
        "-p",
        "compute",
        "--project",
        str(project),
        "--transcript",
        str(transcript),
        env=_env(tmp_path, INFERENCE_BASE_URL=api.url),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "it prints 42\n"
    assert (project / "result.txt").read_text() == "42\n"
    entries = [json.loads(line) for line in transcript.read_text().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds == ["start", "goal", "response", "tool", "response", "tool", "response", "end"]
    assert entries[3]["result"] == "wrote calc.py"
    assert all("elapsed" in e and "time" in e for e in entries)
    assert "sk-test" not in transcript.read_text()

    # The recorded replies replayed against a fresh project do the same work, with no key.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = _env(tmp_path)
    del env["OPENROUTER_API_KEY"]
    replay = _nanocode("--replay", str(transcript), "-p", "compute", "--project", str(fresh), env=env)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == "it prints 42\n"
    assert (fresh / "result.txt").read_text() == "42\n"
    assert len(api.requests) == 3


def test_default_transcript_location(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(message(f"{MARKER} ok"))
    _nanocode("-p", "g", "--project", str(project), env=_env(tmp_path, INFERENCE_BASE_URL=api.url), check=True)
    runs = list((tmp_path / "state" / "nanocode" / "runs").glob("*.jsonl"))
    assert len(runs) == 1


def test_repl_carries_the_conversation_from_goal_to_goal(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(message(f"{MARKER} first done"), message(f"{MARKER} second done"))
    done = _nanocode(
        "--project", str(project), input="goal one\ngoal two\n\n", env=_env(tmp_path, INFERENCE_BASE_URL=api.url)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "first done\nsecond done\n"
    assert "nanocode" in done.stderr and "scripted" not in done.stderr
    # The newest message goes as a content part marked for the prompt cache (the default model is Anthropic's).
    second = [
        m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in api.requests[1]["messages"]
    ]
    assert second[1:] == ["goal one", "GOAL_COMPLETE first done", "goal two"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_goal_and_its_processes(
    api: ScriptedAPI, project: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    marker = f"nanocode-interrupt-{time.monotonic_ns()}"
    api.add(tools(call("shell", {"command": f"bash -c 'exec -a {marker} sleep 300'"})))
    process = subprocess.Popen(
        [sys.executable, "-m", "nanocode", "-p", "g", "--project", str(project)],
        env=_env(tmp_path, INFERENCE_BASE_URL=api.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _running(marker):
        time.sleep(0.05)
    assert _running(marker)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert not _running(marker)


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{marker}"], capture_output=True).returncode == 0


def test_the_sandbox_refuses_a_whole_home_folder_by_default(tmp_path: Path) -> None:
    env = _env(tmp_path, HOME=str(tmp_path))
    done = _nanocode("--sandbox", "-p", "g", cwd=tmp_path, env=env)
    assert done.returncode == 3
    assert "refusing to share all of" in done.stderr


@pytest.mark.parametrize("network", ["host", "container:abc"])
def test_host_namespaces_are_refused(project: Path, network: str) -> None:
    result = invoke(["--sandbox", "--network", network, "-p", "g", "--project", str(project)])
    assert result.exit_code == 3
    assert "namespace" in result.stderr


def test_sigterm_ends_the_repl_too(api: ScriptedAPI, project: Path, tmp_path: Path) -> None:
    api.add(tools(call("shell", {"command": "sleep 300"})))
    process = subprocess.Popen(
        [sys.executable, "-m", "nanocode", "--project", str(project)],
        stdin=subprocess.PIPE,
        env=_env(tmp_path, INFERENCE_BASE_URL=api.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin
    process.stdin.write("wait\n")
    process.stdin.flush()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(api.requests) < 1:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)  # stdin still open: only the signal can end it
    assert process.returncode == 130, stderr


def test_terminal_controls_from_tools_are_not_printed(api: ScriptedAPI, project: Path) -> None:
    api.add(
        tools(call("shell", {"command": "printf '\\033]52;c;cHduZWQ=\\007 clipboard'"})),
        message(f"{MARKER} done \x1b[2J"),
    )
    result = invoke(["-p", "g", "--project", str(project)], api)
    assert result.exit_code == 0
    assert "\x1b]52" not in result.stderr and "\x07" not in result.stderr
    assert "clipboard" in result.stderr
