"""SIGTERM honoured from a command's first instruction to its last.

In a container the command is PID 1, and the kernel drops a signal sent to PID 1 that has
no handler: a SIGTERM before the asyncio loop's handlers exist would be lost, and the pod
killed when its grace period ends. So each command calls ``exit_on_sigterm`` before its
heavy imports (stdlib only here). ``loop.add_signal_handler`` (runner.py, kopf, aiohttp)
later replaces that handler in one step, without a moment with none, and ``hand_back``
restores it before the loop closes, which would reset SIGTERM to the default.
"""

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

#: 128 + SIGTERM, the status a shell reports for a process that SIGTERM ended.
EXIT_CODE = 128 + signal.SIGTERM


def _exit(signum: int, frame: FrameType | None) -> None:
    # os._exit, not SystemExit: before the loop's handlers take over (and after they have
    # stopped everything) the process holds nothing to release, and code that catches
    # BaseException could swallow an exception.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a reentrant flush of a busy stream
            stream.flush()
    os._exit(EXIT_CODE)


def exit_on_sigterm() -> None:
    """From now on a SIGTERM ends the process at once with ``EXIT_CODE``."""
    signal.signal(signal.SIGTERM, _exit)


def hand_back(loop: "asyncio.AbstractEventLoop") -> None:
    """Take SIGTERM back from ``loop`` (what it handled has stopped): closing the loop
    would reset it to the default, which PID 1 ignores. Blocked meanwhile, so a SIGTERM
    arriving in between waits for the new handler instead of being dropped."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        loop.remove_signal_handler(signal.SIGTERM)
        exit_on_sigterm()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
