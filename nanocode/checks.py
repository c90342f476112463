"""Done means checked: the commands that must pass, in the goal's executor, before a goal is complete."""

from dataclasses import dataclass

from nanocode import prompts
from nanocode.context.compaction import clip
from nanocode.interfaces import Display, Executor, Recorder
from nanocode.tools import format_command

OUTPUT_SHOWN = 4000  # characters of a failed check's output the model gets (head and tail)


@dataclass
class Check:
    command: str
    exit_code: int | None
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def run_checks(
    commands: list[str], executor: Executor, timeout: float, display: Display, recorder: Recorder
) -> list[Check]:
    """Runs every check, in order, and says each one's outcome."""
    checks = []
    for command in commands:
        result = executor.run(command, timeout)
        check = Check(command, None if result.timed_out else result.exit_code, format_command(result, timeout))
        recorder.record("check", command=command, exit_code=check.exit_code, output=clip(check.output, OUTPUT_SHOWN))
        display.note(f"check {'passed' if check.passed else 'failed'}: {command}")
        checks.append(check)
    return checks


def failure_prompt(checks: list[Check]) -> str | None:
    """What the model is told when some check failed; None when all passed."""
    failed = [(c.command, clip(c.output, OUTPUT_SHOWN)) for c in checks if not c.passed]
    return prompts.check_failed(failed, len(checks)) if failed else None
