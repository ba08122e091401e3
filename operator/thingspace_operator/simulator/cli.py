"""The ``thingspace-sim`` command.

``thingspace-sim [serve] [--host H] [--port P] ...`` serves the simulator (``serve`` may
be left out); every live setting of ``PUT /_sim/config`` has a flag
(``--allow-any-listener-port``, ``--delivery-retry-seconds`` ...). Accepted credentials
may also come from ``THINGSPACE_SIM_APPS`` and ``THINGSPACE_SIM_USERS``, which keep
secrets out of argv. ``thingspace-sim send --account A --service S [--payload FILE]
[--wait]`` asks a running simulator to deliver one callback message to what is
registered there.

aiohttp and the simulator's modules are imported inside the functions, after ``main``
has installed its SIGTERM handler (the package imports them lazily too).
"""

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..listen import listen_early
from ..sigterm import exit_on_sigterm

if TYPE_CHECKING:
    import socket

    import aiohttp

    from .state import SimulatorConfig

DEFAULT_SIM_URL = "http://127.0.0.1:8088"
POLL_SECONDS = 0.1
#: Accepted credentials from the environment, comma-separated: secrets in argv show in
#: /proc/*/cmdline and ps. Flags add to them (a flag wins for the same key or name).
APPS_ENV = "THINGSPACE_SIM_APPS"
USERS_ENV = "THINGSPACE_SIM_USERS"


def main(argv: Sequence[str] | None = None) -> int:
    exit_on_sigterm()  # first: until aiohttp handles it, PID 1 would drop it
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["send"]:
        return send_main(args[1:])
    if args[:1] == ["serve"]:
        args = args[1:]
    return serve_main(args)


# --- serve -----------------------------------------------------------------------------


def seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value} is not a number of seconds")
    return number


def serve_main(argv: Sequence[str]) -> int:
    import logging

    # Probes wait in its backlog while aiohttp loads (the full parser's defaults need it),
    # instead of being refused (listen.py).
    listener = listen_before_loading(argv)
    parser = serve_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_simulator(args.host, args.port, config, listener)
    exit_on_sigterm()  # aiohttp reset SIGTERM to the default as it stopped
    return 0


def listen_before_loading(argv: Sequence[str]) -> "socket.socket | None":
    """The port of --host and --port, read alone: not for --help."""
    if {"-h", "--help"} & set(argv):
        return None
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--host", default="127.0.0.1")
    early.add_argument("--port", type=int, default=8088)
    try:
        known, _ = early.parse_known_args(argv)
    except SystemExit:  # a malformed --port: the full parser says so
        return None
    return listen_early(known.host, known.port)


def run_simulator(
    host: str, port: int, config: "SimulatorConfig", listener: "socket.socket | None" = None
) -> None:
    from . import server  # aiohttp: only now

    server.run_simulator(host, port, config, listener)


def serve_parser() -> argparse.ArgumentParser:
    from .state import CHOICE_SETTINGS, SimulatorConfig

    parser = argparse.ArgumentParser(
        prog="thingspace-sim",
        usage="%(prog)s [serve] [options]",
        description="A faithful simulator of the ThingSpace API.",
        epilog=f"Accepted credentials also come from {APPS_ENV} and {USERS_ENV}, "
        "comma-separated KEY:SECRET lists that keep secrets out of the command line; "
        "--app and --user add to them. "
        "thingspace-sim send --help: ask a running simulator to deliver a callback.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 to be reached from elsewhere)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8088,
        help="port of the ThingSpace API and of /_sim/ (default 8088)",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="KEY:SECRET",
        help=f"accepted OAuth app credentials (repeatable, added to {APPS_ENV}; default: demo)",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help=f"accepted UWS login (repeatable, added to {USERS_ENV}; default: demo)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME",
        help="existing account (repeatable; default: any well-formed name)",
    )
    settings = parser.add_argument_group(
        "settings",
        "Each can also be changed while the simulator runs: PUT /_sim/config with its "
        'name, e.g. {"delivery_retry_seconds": 2}; GET /_sim/config shows them all.',
    )
    for name, help_text in setting_help().items():
        default = getattr(SimulatorConfig, name)
        flag = "--" + name.replace("_", "-")
        if name == "enforce_listener_ports":
            settings.add_argument(
                "--allow-any-listener-port",
                dest=name,
                action="store_false",
                default=default,
                help=help_text,
            )
        elif name in CHOICE_SETTINGS:
            settings.add_argument(
                flag,
                dest=name,
                choices=CHOICE_SETTINGS[name],
                default=default,
                help=f"{help_text} (default {default}; config key {name})",
            )
        else:
            settings.add_argument(
                flag,
                dest=name,
                type=seconds,
                default=default,
                metavar="SECONDS",
                help=f"{help_text} (default {default:g}; config key {name})",
            )
    return parser


def setting_help() -> dict[str, str]:
    """What each live setting does and why one would change it: the flags' help."""
    from .api import ALLOWED_PORTS_TEXT
    from .delivery import MAX_ATTEMPTS

    return {
        "enforce_listener_ports": "accept a listener URL on any port. ThingSpace accepts "
        f"only ports {ALLOWED_PORTS_TEXT} and refuses others with Url.PortNotAllowed; "
        "by default the simulator does the same. Use this for a listener on a random local "
        "port such as http://127.0.0.1:38123/hook (config key enforce_listener_ports: "
        "false)",
        "delivery_retry_seconds": "wait after a failed delivery attempt (no 2xx answer) "
        f"before the next one, up to {MAX_ATTEMPTS} attempts in all. ThingSpace waits five "
        "minutes; a few seconds let you watch a listener's retries",
        "delivery_timeout_seconds": "how long one delivery attempt waits for the listener's "
        "answer; after that it counts as failed, like an answer other than 2xx",
        "latency_seconds": "delay before every answer of the ThingSpace API (/api/...), "
        "to see how a client copes with a slow ThingSpace; not /_sim/, not deliveries",
        "session_idle_seconds": "idle time after which a session token (VZ-M2M-Token) "
        "expires; ThingSpace: 20 minutes. Lower it to test logging in again",
        "duplicate_register": "registering a service that is already registered: upsert "
        "replaces it, reject refuses with Callback.AlreadyRegistered; ThingSpace does not "
        "document which it does",
        "empty_list_body": "the callback list when nothing is registered: array answers [], "
        "empty a zero-length body; ThingSpace documents an empty body without saying which",
    }


def _pairs(values: Sequence[str], what: str, form: str) -> dict[str, str]:
    """``NAME:SECRET`` entries as a mapping; an error names the entry, never shows it."""
    pairs = {}
    for number, value in enumerate(values, 1):
        name, sep, secret = value.partition(":")
        if not sep or not name or not secret:
            raise ValueError(f"{what}: entry {number} must look like {form}")
        pairs[name] = secret
    return pairs


def _credentials(
    environ: Mapping[str, str], variable: str, flags: Sequence[str], flag: str, form: str
) -> dict[str, str]:
    listed = [entry.strip() for entry in environ.get(variable, "").split(",")]
    return {
        **_pairs([entry for entry in listed if entry], variable, form),
        **_pairs(flags, flag, form),
    }


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> "SimulatorConfig":
    """The serve configuration from ``args`` and the credentials in ``environ``."""
    from .state import DEMO_APPS, DEMO_USERS, LIVE_SETTINGS, SimulatorConfig

    environ = environ or {}
    apps = _credentials(environ, APPS_ENV, args.app, "--app", "KEY:SECRET")
    users = _credentials(environ, USERS_ENV, args.user, "--user", "NAME:PASSWORD")
    return SimulatorConfig(
        apps=apps or dict(DEMO_APPS),
        users=users or dict(DEMO_USERS),
        accounts=frozenset(args.account) if args.account else None,
        **{setting: getattr(args, setting) for setting in LIVE_SETTINGS},
    )


# --- send ------------------------------------------------------------------------------


class SendFailed(Exception):
    """The simulator refused the request or could not be reached."""


def send_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thingspace-sim send",
        description="Ask a running thingspace-sim to deliver one callback message to the URL "
        "registered there for the account and service. Prints {id, requestId}.",
    )
    parser.add_argument("--account", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument(
        "--payload",
        type=Path,
        metavar="FILE",
        help="JSON object: the service-specific part of the message (default: the sample)",
    )
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="KIND:ID",
        help="a device of the message's deviceIds (repeatable; default: one sample IMEI)",
    )
    parser.add_argument("--sim-url", default=DEFAULT_SIM_URL, help=f"default {DEFAULT_SIM_URL}")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait until delivered (exit 0) or archived (exit 1), show each attempt on "
        "stderr as it goes, then print the history entry",
    )
    parser.add_argument("--wait-timeout", type=seconds, metavar="SECONDS", help="give up then")
    return parser


def send_main(argv: Sequence[str]) -> int:
    parser = send_parser()
    args = parser.parse_args(argv)
    body: dict[str, Any] = {"account": args.account, "service": args.service}
    try:
        if args.payload is not None:
            body["payload"] = json.loads(args.payload.read_text())
        if args.device:
            body["deviceIds"] = [
                {"id": device_id, "kind": kind}
                for kind, device_id in (_device(value) for value in args.device)
            ]
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    import asyncio

    try:
        delivered = asyncio.run(_send(args.sim_url.rstrip("/"), body, args.wait, args.wait_timeout))
    except SendFailed as exc:
        print(f"thingspace-sim send: {exc}", file=sys.stderr)
        return 1
    return 0 if delivered else 1


def _device(value: str) -> tuple[str, str]:
    kind, sep, device_id = value.partition(":")
    if not sep or not kind or not device_id:
        raise ValueError("--device must look like KIND:ID")
    return kind, device_id


async def _send(url: str, body: dict[str, Any], wait: bool, give_up: float | None) -> bool:
    import asyncio

    import aiohttp

    async with aiohttp.ClientSession() as http:
        accepted = await _call(http, "POST", f"{url}/_sim/deliveries", body)
        print(json.dumps(accepted), flush=True)
        if not wait:
            return True
        shown: list[str] = []
        try:
            async with asyncio.timeout(give_up):
                while True:
                    entry = await _call(http, "GET", f"{url}/_sim/deliveries/{accepted['id']}")
                    _show_progress(entry, shown)
                    if entry["status"] != "pending":
                        print(json.dumps(entry), flush=True)
                        return bool(entry["status"] == "delivered")
                    await asyncio.sleep(POLL_SECONDS)
        except TimeoutError:
            raise SendFailed(f"still pending after {give_up:g} s") from None


def _show_progress(entry: dict[str, Any], shown: list[str]) -> None:
    """Print on stderr each step of ``entry`` not in ``shown`` yet (stdout stays JSON)."""
    steps = []
    for attempt in entry.get("attempts", []):
        number = attempt["number"]
        steps.append(
            f"attempt {number} of {entry.get('maxAttempts', '?')} to {attempt['url']} "
            f"started {attempt['at']}"
        )
        if attempt.get("state") != "in_flight":
            answer = f"HTTP {attempt['status']}" if attempt["status"] is not None else ""
            why = ", ".join(part for part in (answer, attempt.get("error", "")) if part)
            steps.append(f"attempt {number} {attempt.get('state')}: {why}")
    if entry.get("state") == "retrying":
        next_number = len(entry["attempts"]) + 1
        steps.append(f"retrying: attempt {next_number} at {entry.get('nextAttemptAt')}")
    if entry["status"] != "pending":
        steps.append(entry["status"] + (f": {entry['reason']}" if entry.get("reason") else ""))
    for step in steps:
        if step not in shown:
            shown.append(step)
            print(f"delivery {entry['id']}: {step}", file=sys.stderr, flush=True)


async def _call(http: "aiohttp.ClientSession", method: str, url: str, body: Any = None) -> Any:
    import aiohttp

    try:
        async with http.request(method, url, json=body) as response:
            answer = await response.json(content_type=None)
            if response.status >= 300:
                problem = answer.get("error", answer) if isinstance(answer, dict) else answer
                raise SendFailed(f"HTTP {response.status}: {problem}")
            return answer
    except (aiohttp.ClientError, ValueError) as exc:
        raise SendFailed(f"{url}: {type(exc).__name__}: {exc}") from None
