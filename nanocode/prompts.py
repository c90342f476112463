"""What nanocode says to the model."""

MARKER = "GOAL_COMPLETE"

SYSTEM = """\
You are nanocode, a coding agent that gets things done by acting, not by talking.
You work in the project directory {project} with three tools: shell (runs a bash
command there), read_file and write_file (paths relative to the project).

How to work:
- Do the work; never describe what you would do instead of doing it.
- To build something: write the files, run them, read the errors, fix, and run again
  until it works. Check your result before you call the goal done.
- Commands run without a terminal and cannot be answered: use non-interactive flags
  (-y, --no-pager, CI=1). A command is stopped after {timeout:g} seconds. A command
  you start in the background must send its output elsewhere
  (`cmd > log.txt 2>&1 &`), or the call waits for it until the timeout.
- Output longer than {cap} bytes is cut in the middle; prefer focused commands.

{environment}

When, and only when, the goal is fully achieved and checked, start your reply with
{marker} followed by a short summary for the user. A reply without tool calls that
does not start with {marker} means you are not done, and you will be asked to go on.
"""

HOST = "Commands run directly on the user's machine: be careful with anything outside the project."

SANDBOX = """\
Commands run in a disposable Linux container (image {image}) {user}.
Only the project directory is shared with the user; anything else you change
(installed packages, files in your home or /tmp) is gone when the goal ends.
{git} .env files read as empty.
{limits} {network}"""


def sandbox_user(user: str, rootless: bool) -> str:
    """Who the commands run as, as it is: the user who started nanocode, which may be root."""
    uid = user.split(":", 1)[0]
    if uid == "0" and rootless:
        return "as root, which is the user who started nanocode (the engine is rootless)"
    if uid == "0":
        return "as root (uid 0), as nanocode was started"
    return f"as uid {uid}, the user who started nanocode, without root (install with pip --user or a venv)"


LIMITS_NOT_ENFORCED = "This engine does not enforce the {names} limit{s}: take care not to exhaust the machine."


def limits(memory: str, cpus: float, pids: int, unenforced: list[str]) -> str:
    """The limits as they really are: those the engine does not enforce are not claimed."""
    claimed = {"memory": f"memory {memory}", "CPU": f"{cpus:g} CPUs", "processes": f"at most {pids} processes"}
    held = [text for name, text in claimed.items() if name not in unenforced]
    text = f"Limits: {', '.join(held)}." if held else ""
    if unenforced:
        names = ", ".join(unenforced)
        text += (" " if text else "") + LIMITS_NOT_ENFORCED.format(names=names, s="s" if len(unenforced) > 1 else "")
    return text


GIT_BIND = """\
The project is the user's live folder. Every .git in it is read-only: git status,
diff and log work, but commits do not (they need nanocode's overlay workspace):
leave your work uncommitted."""
GIT_OVERLAY = """\
Your changes go to a private layer that the user reviews before applying them: use
git freely (it commits as the user: set no name or email); your new commits on the
current branch become commits for the user."""

NETWORK_NONE = "There is no network: nothing can be downloaded or installed from the internet."
NETWORK_ON = "The network is available (mode {mode}): you may install what you need (pip install --user, venv)."
NETWORK_ALLOWLIST = """\
The network reaches only these hosts: {hosts}. Every other host is refused (HTTP 403,
with the reason). It goes through a proxy that HTTP_PROXY, HTTPS_PROXY and the settings
of pip, npm, git and apt already point at; there is no DNS, so a tool that ignores the
proxy settings cannot connect. If you need another host, say so in your answer."""

CONTINUE = """\
You ended your turn without marking the goal complete. The goal is still:

{goal}

Carry on with the tools. If the goal really is achieved and checked, reply with
{marker} followed by a short summary."""

SANDBOX_RESTARTED = (
    "A fresh sandbox is started for the next call: the project files are kept, but anything "
    "outside the project (installed packages, files in home or /tmp, background processes) was lost."
)


def system_prompt(project: str, timeout: float, cap: int, environment: str) -> str:
    return SYSTEM.format(project=project, timeout=timeout, cap=cap, environment=environment, marker=MARKER)


def continuation(goal: str) -> str:
    return CONTINUE.format(goal=goal, marker=MARKER)


def completed_answer(text: str | None) -> str | None:
    """The answer, if the text marks the goal complete; otherwise None."""
    stripped = (text or "").lstrip()
    if not stripped.startswith(MARKER):
        return None
    return stripped[len(MARKER) :].lstrip(" :-\t\n") or "(done)"


INSTRUCTIONS = """\
Project instructions (from {names}; follow them):

{text}"""

INSTRUCTIONS_CUT = "[... the project instructions were cut here: they are longer than {limit} KiB ...]"


def with_instructions(system: str, names: list[str], text: str) -> str:
    if not text.strip():
        return system
    return system + "\n" + INSTRUCTIONS.format(names=", ".join(names), text=text.strip()) + "\n"


CUT_RESULT = (
    "\n[... {cut} characters of this result were cut by nanocode to keep the conversation within the "
    "model's context window; call {name} again with the same arguments to see all of it ...]\n"
)

BOUNDED_RESULT = (
    "\n[... nanocode cut {cut} characters from the middle of this result ({lines} lines in all) to keep it "
    "within the model's context window. Read the rest in parts: read_file with start_line and end_line, "
    "or a command such as `sed -n '100,200p' FILE` or `head`/`tail` ...]\n"
)

SUMMARY_SYSTEM = """\
You summarise the work of a coding agent so that it can carry on without the
conversation below, which is about to be removed. Write what the goal is, what was
done (files written or changed, commands run and what they showed, errors met and how
they were fixed, decisions taken) and what remains to do. Keep names of files,
functions, commands and error messages exact. Be brief: at most about 400 words."""

SUMMARY = """\
[nanocode: earlier turns of this conversation were removed to keep it within the model's
context window. A summary of them follows; the files themselves are unchanged.]

{summary}"""

SUMMARY_FALLBACK = """\
Earlier turns were removed without a summary ({reason}). The tool calls made in them, in order:
{calls}"""

REPEATED = (
    "\n\n[nanocode: this exact call has now given this exact result {count} times in a row. "
    "Repeating it will not change anything: try something else. At {limit} times the goal is stopped.]"
)

CHECK_FAILED = """\
{marker} was not accepted: the goal is complete only when every check passes, and
{failed} of {total} did not. {details}

Fix what the checks found and carry on with the tools. When they would pass, reply
with {marker} again."""

CHECK_DETAIL = "\n\nCheck `{command}`:\n{output}"

NOT_RUN_STOPPED = "ERROR: not run: nanocode stopped"

RESUMED = """\
nanocode was stopped in the middle of this goal and has been started again. Commands
that were running were stopped, and anything outside the project (processes, in a
sandbox also installed packages and /tmp) may be gone; the project's files are as they
were left. Carry on where you left off. The goal is still:

{goal}

When it is achieved and checked, reply with {marker} followed by a short summary."""


def check_failed(failures: list[tuple[str, str]], total: int) -> str:
    details = "".join(CHECK_DETAIL.format(command=command, output=output) for command, output in failures)
    return CHECK_FAILED.format(marker=MARKER, failed=len(failures), total=total, details=details)


def resumed(goal: str) -> str:
    return RESUMED.format(goal=goal, marker=MARKER)
