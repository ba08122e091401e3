"""A tiny run of bench/realcp.py on the suite's control plane, so the real-control-plane
benchmark cannot rot, with its bounds asserted from the API server's own audit log."""

from bench import realcp
from tests.e2e.cluster import needs_control
from tests.e2e.controlplane import Cluster


def test_the_real_control_plane_benchmark_runs_within_its_bounds(plane: Cluster) -> None:
    needs_control(plane)  # reads the audit log
    args = realcp.parse(
        ["--n", "12", "--converge-resync", "60", "--resync", "2", "--periods", "1",
         "--latency", "0", "--no-write"]
    )  # fmt: skip
    figures = realcp.run_on(args, plane)
    converge, restart = figures.converge, figures.restart
    assert converge.calls == {"token": 1, "login": 1, "list": 1, "register": 12}
    assert converge.writes <= 3 * 12, converge.verbs  # finalizer, status, Event
    assert restart.calls.get("register", 0) == 0
    assert restart.writes == 0, restart.verbs
    assert figures.steady_writes_per_period == 0
    assert "| S6 restart |" in realcp.render(figures, args)
    # The deletion: each handled once, one deregister, the finalizer's removal and an Event.
    deletion = figures.deletion
    assert deletion is not None
    assert deletion.calls.get("deregister") == 12, deletion.calls
    assert (deletion.handled, deletion.retried) == (12, 0)
    assert deletion.verbs["patch"] == 12, deletion.verbs
    assert deletion.verbs["create"] == 12, deletion.verbs
    assert deletion.writes == 24, deletion.verbs
    assert deletion.wait_gets == 12  # kubectl's wait: one GET per callback
    assert deletion.first_deregister <= deletion.last_deregister
    assert "kubectl's wait" in realcp.render_deletion(figures, args)
