"""SIGTERM from a command's first instruction to its last (sigterm.py): the handler comes
before the heavy imports, the operator's loop takes it over at its first step and hands it
back before closing. Each case runs in a process of its own."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_entry_points_load_nothing_heavy_before_their_sigterm_handler() -> None:
    done = python(
        """
        import sys
        import thingspace_operator.cli, thingspace_operator.simulator.cli
        heavy = ("asyncio", "aiohttp", "kopf", "kubernetes", "yaml", "prometheus_client",
                 "importlib.metadata")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_simulator_package_still_exports_its_names() -> None:
    done = python(
        """
        import thingspace_operator.simulator as sim
        from thingspace_operator.simulator import SimulatorServer, cli
        assert SimulatorServer is sim.server.SimulatorServer
        assert all(getattr(sim, name) is not None for name in sim.__all__)
        try:
            sim.nothing
        except AttributeError:
            print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_operator_loop_stops_at_sigterm_from_its_first_step_and_hands_it_back() -> None:
    done = python(
        """
        import asyncio, os, signal
        from thingspace_operator import runner, sigterm
        from thingspace_operator.config import OperatorConfig

        sigterm.exit_on_sigterm()

        async def serve(config, login, health_socket, stop):
            os.kill(os.getpid(), signal.SIGTERM)  # before anything else ran
            await asyncio.wait_for(stop.wait(), 10)
            print("stopped by the loop", flush=True)

        runner.serve = serve
        asyncio.run(runner.run(OperatorConfig(), None))
        print("handed back:", signal.getsignal(signal.SIGTERM) is sigterm._exit, flush=True)
        print("unblocked:", signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, []))
        os.kill(os.getpid(), signal.SIGTERM)  # after the loop: ends it, as PID 1 too
        signal.pause()
        """
    )
    assert done.stdout.splitlines() == [
        "stopped by the loop",
        "handed back: True",
        "unblocked: True",
    ], done.stderr
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
