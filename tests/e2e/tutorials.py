"""Runnable documentation pages: the shell blocks of a Markdown page, extracted in order and
run with bash as a reader runs them in one terminal, each compared with the output the page
shows. The convention is described in tests/e2e/test_tutorials.py; nothing here knows about
Kubernetes."""

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Languages of the blocks that run (unless marked ``<!-- not run -->``).
SHELL = ("sh", "bash", "shell")
#: The language of a block that shows the output of the shell block right above it.
OUTPUT = "text"
NOT_RUN = re.compile(r"^<!--\s*not run\b.*-->$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
ELLIPSIS = "..."
#: What varies from run to run in kubectl's and helm's output, and stands for itself.
VARYING = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uid>"),
)
#: A whole word that is an age as kubectl prints one: 0s, 59s, 2m3s, 5h, 3d4h, <invalid>.
AGE = re.compile(r"^(?:\d+[smhdy](?:\d+[smh])?|<invalid>)$")


@dataclass
class Block:
    """A fenced code block of a page, with the output block that follows it, if any."""

    page: str
    line: int  # of the opening fence, from 1
    language: str
    code: str
    run: bool
    expected: str | None = None

    @property
    def title(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip()), "")
        return f"{self.page}:{self.line} `{first.strip()}`"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` in order; an output block is attached to the shell
    block it follows (only blank lines between) instead of being listed."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    previous_end = -2  # the line index of the last closing fence
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening["fence"], opening["lang"].lower()
        start = i
        i += 1
        body = []
        while i < len(lines) and not (
            lines[i].startswith(fence[0] * len(fence)) and not lines[i].strip(fence[0]).strip()
        ):
            body.append(lines[i])
            i += 1
        before = [ln.strip() for ln in lines[:start] if ln.strip()]
        marked = bool(before) and bool(NOT_RUN.match(before[-1]))
        follows = all(not ln.strip() for ln in lines[previous_end + 1 : start])
        code = "\n".join(body) + "\n"
        if (
            language == OUTPUT
            and found
            and found[-1].language in SHELL
            and found[-1].expected is None
            and follows
        ):
            if not marked:
                found[-1].expected = code
        else:
            run = language in SHELL and not marked
            found.append(Block(page.name, start + 1, language, code, run))
        previous_end = i
        i += 1
    return found


def normalised(text: str) -> list[str]:
    """The lines that must match: times, uids and ages replaced, runs of blanks (column
    widths) made one space, blank lines left out."""
    result = []
    for raw in text.splitlines():
        line = raw
        for pattern, placeholder in VARYING:
            line = pattern.sub(placeholder, line)
        words = ["<age>" if AGE.match(word) else word for word in line.split()]
        if words:
            result.append(" ".join(words))
    return result


def matches(expected: str, got: str) -> bool:
    """Whether ``got`` is what ``expected`` shows; a line ``...`` stands for any lines."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == ELLIPSIS else re.escape(line) + r"\n"
        for line in normalised(expected)
    )
    text = "".join(line + "\n" for line in normalised(got))
    return re.fullmatch(pattern, text) is not None


class Terminal:
    """One reader's terminal: each block runs in a new ``bash`` with ``set -euo pipefail``,
    starting where the previous one left off (working directory and exported variables).
    Background jobs (``&``) of a block run on until ``close``."""

    def __init__(self, workdir: Path, statedir: Path, env: Mapping[str, str]) -> None:
        self.cwd, self.statedir, self.env = workdir, statedir, dict(env)
        self.statedir.mkdir(parents=True, exist_ok=True)
        self._groups: list[int] = []
        self._count = 0

    def run(self, code: str, timeout: float) -> tuple[int | None, str]:
        """The exit code (None: timed out, killed) and the output, stdout and stderr
        interleaved as a terminal shows them."""
        self._count += 1
        state = self.statedir / f"block-{self._count}"
        env_file, cwd_file = state.with_suffix(".env"), state.with_suffix(".cwd")
        script = state.with_suffix(".sh")
        script.write_text(
            f"trap 'env -0 > {shlex.quote(str(env_file))}; "
            f"pwd > {shlex.quote(str(cwd_file))}' EXIT\n"
            "set -euo pipefail\n" + code
        )
        output_file = state.with_suffix(".out")
        with output_file.open("wb") as output:
            # To a file, not a pipe: a background job holding it open does not block us.
            process = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._groups.append(process.pid)
            try:
                code_ = process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill(process.pid, signal.SIGKILL)
                process.wait(10)
                code_ = None
        if env_file.exists() and cwd_file.exists():
            self.env = dict(
                item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item
            )
            self.cwd = Path(cwd_file.read_text().strip())
        return code_, output_file.read_text(errors="replace")

    def close(self) -> None:
        for group in self._groups:
            self._kill(group, signal.SIGTERM)

    @staticmethod
    def _kill(group: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)


def run_page(
    page: Path,
    terminal: Terminal,
    timeout: float = 90.0,
    after_block: Callable[[], None] = lambda: None,
    context: Callable[[], str] = lambda: "",
) -> list[Block]:
    """Run the page's shell blocks in order; fail at the first that exits non-zero, times
    out or prints other than the page shows. ``after_block`` runs after each block (the
    test environment's part: start what a cluster would); ``context`` adds to a failure
    message (a log tail). Returns the blocks run."""
    __tracebackhide__ = True  # a failure shows its message, not this loop
    ran = []
    for block in blocks(page):
        if not block.run:
            continue
        code, output = terminal.run(block.code, timeout)
        if code != 0:
            why = f"timed out after {timeout:.0f} s" if code is None else f"exited {code}"
            raise AssertionError(
                f"{block.title} {why}\n--- block\n{block.code}--- output\n{output}{context()}"
            )
        if block.expected is not None and not matches(block.expected, output):
            raise AssertionError(
                f"{block.title}: the output differs from the page\n"
                f"--- expected (the page)\n{block.expected}--- got\n{output}"
            )
        ran.append(block)
        after_block()
    return ran
