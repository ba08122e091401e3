"""Command-line entry point ``thingspace-operator``: ``run`` and the gitops commands.

Almost nothing is imported at the top: ``operator_main`` installs its SIGTERM handler
before anything else loads, then binds the health port. kopf, the ``kubernetes``
client and the operator's modules are imported inside the functions: ``run`` must block
the ``kubernetes`` package before anything imports kopf.
"""

import gc
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .sigterm import exit_on_sigterm

if TYPE_CHECKING:
    import argparse
    import socket

    from .config import OperatorConfig
    from .gitops.commands import Parser


def operator_main(argv: Sequence[str] | None = None) -> int:
    exit_on_sigterm()  # first: until the asyncio loop handles it, PID 1 would drop it
    argv = list(sys.argv[1:] if argv is None else argv)
    health = bind_health(os.environ) if argv[:1] == ["run"] and not names_health(argv) else None
    from .gitops.commands import dispatch

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        return dispatch(args)
    block_kubernetes()
    try:
        config = run_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    if health is not None and health.getsockname()[1] != config.health_port:
        health.close()  # not expected (no --health-port given), but never the wrong port
        health = None
    run_operator(config, health)
    return 0


def names_health(argv: Sequence[str]) -> bool:
    """Does ``argv`` (maybe) set --health-port, in full or abbreviated as argparse allows?
    Then the port is known only once parsed: not even briefly bind the environment's."""
    return any(
        len(flag) > 2 and "--health-port".startswith(flag)
        for flag in (arg.split("=", 1)[0] for arg in argv)
    )


def bind_health(env: Mapping[str, str]) -> "socket.socket | None":
    """The health port of the environment's settings, listening from the start (listen.py):
    the kubelet's probes wait until the server answers them (runner.py) instead of being
    refused while the operator imports and logs in."""
    from .config import OperatorConfig
    from .listen import listen_early

    try:
        port = OperatorConfig.from_env(env).health_port
    except ValueError:
        return None  # the settings are reported once parsed
    return listen_early("0.0.0.0", port)  # noqa: S104 (probes come from the kubelet)


def build_parser() -> "Parser":
    import argparse

    from .gitops.commands import Parser, add_commands

    parser = Parser(
        prog="thingspace-operator",
        description="Keep Verizon ThingSpace callback registrations equal to "
        "ThingSpaceCallback resources.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    add_commands(commands)
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)"
    )
    run.add_argument("--api-url", help="ThingSpace API root [THINGSPACE_API_URL]")
    run.add_argument(
        "--resync-seconds", type=float, help="drift check period [THINGSPACE_RESYNC_SECONDS]"
    )
    run.add_argument(
        "--secret-watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="watch Secrets labelled thingspace.io/credentials=true (default on) "
        "[THINGSPACE_SECRET_WATCH]",
    )
    run.add_argument(
        "--namespaced-secrets",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read Secrets in callbacks' namespaces (default on); off: only ThingSpaceAccounts' "
        "Secrets in the operator's namespace [THINGSPACE_NAMESPACED_SECRETS]",
    )
    election = run.add_argument_group("leader election (several replicas, one acts)")
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="act only while holding the leader Lease (default off; the chart turns it on) "
        "[THINGSPACE_LEADER_ELECT]",
    )
    election.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: the pod's) [THINGSPACE_LEADER_ELECTION_NAMESPACE]",
    )
    election.add_argument(
        "--leader-election-id",
        help="name of the Lease (default thingspace-operator) [THINGSPACE_LEADER_ELECTION_ID]",
    )
    run.add_argument(
        "--health-port", type=int, help="/healthz and /readyz port [THINGSPACE_HEALTH_PORT]"
    )
    run.add_argument("--metrics-port", type=int, help="metrics port [THINGSPACE_METRICS_PORT]")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR [THINGSPACE_LOG_LEVEL]")
    run.add_argument(
        "--log-format", choices=["text", "json"], help="log line format [THINGSPACE_LOG_FORMAT]"
    )
    return parser


def run_config(args: "argparse.Namespace", env: Mapping[str, str] = os.environ) -> "OperatorConfig":
    """The environment's settings, with the flags of ``run`` over them."""
    from .config import OperatorConfig

    return OperatorConfig.from_env(
        env,
        api_url=args.api_url,
        resync_seconds=args.resync_seconds,
        secret_watch=args.secret_watch,
        namespaced_secrets=args.namespaced_secrets,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        log_format=args.log_format,
        # --all-namespaces overrides THINGSPACE_NAMESPACES; no flag leaves it in charge.
        namespaces=() if args.all_namespaces else tuple(args.namespaces) or None,
    )


def block_kubernetes() -> None:
    """Make ``import kubernetes`` fail in this process. kopf imports ``kubernetes.client``
    whenever it can, only to recognise the client's model objects, which the operator never
    hands it; that import loads ~770 modules and ~28 MB of resident memory. A ``None`` entry
    in ``sys.modules`` fails it as if the package were absent, and kopf does without.
    kube/login.py lifts the block if only the client can log in. Never when something
    imported the package already: it is in use then."""
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]


def run_operator(config: "OperatorConfig", health: "socket.socket | None" = None) -> None:
    import asyncio

    from . import runner
    from .kube.login import connect

    configure_logging(config)
    login = connect()  # before kopf: the leader election and the runtime need the cluster
    tune_gc()
    asyncio.run(runner.run(config, login, health))


def tune_gc() -> None:
    """The objects of the imported modules live as long as the process: frozen, no full
    collection walks them again. The collection thresholds stay Python's: collecting the
    young generation every 10,000 allocations instead of 700 saved some CPU but let the
    garbage of a burst pile up, 128 -> 151 MB at the peak of converging 10,000 resources
    (docs/performance.md)."""
    gc.freeze()


def configure_logging(config: "OperatorConfig") -> None:
    import logging

    import kopf

    kopf.configure(
        verbose=config.log_level.upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    logging.getLogger().setLevel(config.log_level.upper())
    # aiohttp's access and client logs could carry URLs with tokens in query strings.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(operator_main())
