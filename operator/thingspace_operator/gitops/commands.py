"""``export``, ``diff`` (``plan``) and ``status``: subcommands of ``thingspace-operator``
and of the kubectl plugin ``kubectl-thingspace``.

Exit codes: 0 success (diff: nothing would change), 2 (diff only) something would change,
1 an error. Nothing here writes to ThingSpace, and no Secret value is ever printed except
by ``export --include-credentials``, which the user asks for by name.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..account import ACCOUNT_PLURAL
from ..config import DEFAULT_API_URL
from ..model import GROUP, PLURAL, VERSION
from ..thingspace.errors import ThingSpaceError
from ..thingspace.models import AppCredentials
from ..thingspace.services import ACCOUNT_NAME_MAX_LENGTH, ACCOUNT_NAME_RE
from . import diff, export, status
from .manifests import ManifestError, dump, load
from .sources import (
    DEFAULT_SECRET_NAME,
    ClusterAccount,
    Credentials,
    SourceError,
    from_cluster,
    from_env,
    from_file,
    read_live,
)

# Imported where used: ``thingspace-operator run`` shares this parser and must not load the
# ``kubernetes`` package (cli.py).
if TYPE_CHECKING:
    import kubernetes

DEFAULT_OPERATOR_NAMESPACE = "thingspace-operator"
Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """Ends the command with exit code 1 and this message on stderr."""


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1, like every other error: exit 2 means "diff found changes"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def account_name(value: str) -> str:
    """A billing account name as the CRD accepts it: it becomes part of the URL path."""
    if len(value) > ACCOUNT_NAME_MAX_LENGTH or not ACCOUNT_NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a billing account name (letters and digits, '-' between)"
        )
    return value


def add_commands(commands: "argparse._SubParsersAction[Any]") -> None:
    _add_export(commands)
    for name in ("diff", "plan"):
        _add_diff(commands, name)
    _add_status(commands)


def _thingspace_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ThingSpace access")
    group.add_argument(
        "--api-url",
        default=os.environ.get("THINGSPACE_API_URL", DEFAULT_API_URL),
        help="ThingSpace API root [THINGSPACE_API_URL]",
    )
    group.add_argument(
        "--credentials-file",
        type=Path,
        metavar="FILE",
        help="a Secret manifest with appKey, appSecret, username, password; default: the "
        "THINGSPACE_APP_KEY, THINGSPACE_APP_SECRET, THINGSPACE_USERNAME, THINGSPACE_PASSWORD "
        "variables",
    )
    group.add_argument("--timeout", type=positive, default=15.0, help="seconds per ThingSpace call")
    group.add_argument(
        "--operator-namespace",
        default=DEFAULT_OPERATOR_NAMESPACE,
        help="where ThingSpaceAccounts' Secrets live when they name no namespace "
        f"(default {DEFAULT_OPERATOR_NAMESPACE})",
    )


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster access (default: KUBECONFIG or ~/.kube/config)")
    group.add_argument("--kubeconfig", help="path of the kubeconfig file")
    group.add_argument("--context", help="kubeconfig context to use")


def _account_ref_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--account-ref",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a ThingSpaceAccount in the cluster (kubeconfig): its account and credentials; "
        f"{what}",
    )


def _add_export(commands: "argparse._SubParsersAction[Any]") -> None:
    parser = commands.add_parser(
        "export",
        help="write live registrations as ThingSpaceCallback manifests (adopting them)",
        description="Read the live callback list of each account and write ready-to-apply "
        "manifests: applying them adopts every registration with no ThingSpace write.",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        type=account_name,
        metavar="NAME",
        help="billing account",
    )
    _account_ref_option(parser, "the manifests then use accountRef")
    parser.add_argument("--namespace", "-n", help="metadata.namespace of the manifests")
    parser.add_argument(
        "--credentials-secret",
        metavar="NAME",
        help="credentialsSecretRef of the manifests (default: the credentials file's Secret)",
    )
    parser.add_argument(
        "--include-credentials",
        action="store_true",
        help="write the live callback usernames and passwords instead of placeholders",
    )
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR", help="one file per resource (default: stdout)"
    )
    _thingspace_options(parser)
    _cluster_options(parser)
    parser.set_defaults(handler=run_export)


def _add_diff(commands: "argparse._SubParsersAction[Any]", name: str) -> None:
    parser = commands.add_parser(
        name,
        help="show what the operator would do to ThingSpace for these manifests",
        description="Compare manifests with the live callback lists (one list call per "
        "account, no write, no cluster needed). Exit 0: nothing would change; 2: something "
        "would; 1: an error.",
    )
    parser.add_argument(
        "--filename",
        "-f",
        action="append",
        required=True,
        type=Path,
        metavar="FILE|DIR",
        help="manifests (repeatable; - for stdin; directories are read recursively)",
    )
    parser.add_argument(
        "--namespace", "-n", default="default", help="namespace of manifests that name none"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="registrations no manifest declares would be deregistered (as for Authoritative)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        type=account_name,
        metavar="NAME",
        help="also list this account, to show registrations no manifest declares",
    )
    parser.add_argument(
        "--credentials-from-manifests",
        action="store_true",
        help="log in with the credentials Secrets found among the manifests (each account's "
        "credentialsSecretRef) when neither --credentials-file nor THINGSPACE_* is given",
    )
    _account_ref_option(parser, "accountRef manifests resolve through it (repeatable)")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    _thingspace_options(parser)
    _cluster_options(parser)
    parser.set_defaults(handler=run_diff)


def _add_status(commands: "argparse._SubParsersAction[Any]") -> None:
    parser = commands.add_parser(
        "status",
        help="the cluster's callbacks and accounts with their conditions, by account",
    )
    parser.add_argument("--namespace", "-n", help="only callbacks of this namespace")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text")
    _cluster_options(parser)
    parser.set_defaults(handler=run_status)


# --- running ------------------------------------------------------------------------------


def dispatch(args: argparse.Namespace) -> int:
    import urllib3

    handler: Handler = args.handler
    try:
        return handler(args)
    except (CommandError, SourceError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        print(f"error: cannot reach the cluster or write the output ({exc})", file=sys.stderr)
    except Exception as exc:  # never a traceback: it could show a value of a Secret
        print(f"error: unexpected {type(exc).__name__}; please report it", file=sys.stderr)
    return 1


def _given_credentials(args: argparse.Namespace, env: Mapping[str, str]) -> Credentials | None:
    if args.credentials_file is not None:
        return from_file(args.credentials_file)
    return from_env(env)


def run_export(args: argparse.Namespace) -> int:
    credentials = _given_credentials(args, os.environ)
    wanted: dict[str, AppCredentials] = {}
    refs: dict[str, str] = {}
    secret_name = args.credentials_secret
    if args.account:
        if credentials is None:
            raise CommandError("--account needs --credentials-file or THINGSPACE_* variables")
        wanted.update(dict.fromkeys(args.account, credentials.values))
        secret_name = secret_name or credentials.secret_name
    if args.account_ref:
        api = _kubernetes(args)
        for name in args.account_ref:
            found = from_cluster(api, name, args.operator_namespace)
            account = found.spec.account_name
            wanted[account], refs[account] = found.credentials.values, name
    if not wanted:
        raise CommandError("name at least one --account or --account-ref")
    live = asyncio.run(read_live(args.api_url, wanted.items(), args.timeout))
    callbacks = []
    for account, listed in live.items():
        if isinstance(listed, ThingSpaceError):
            raise CommandError(f"cannot list account {account}: {listed}")
        callbacks += listed
    options = export.ExportOptions(
        args.namespace, secret_name or DEFAULT_SECRET_NAME, refs, args.include_credentials
    )
    exported, skipped = export.export(callbacks, options)
    for why in skipped:
        print(f"warning: not exported: {why}", file=sys.stderr)
    _write(exported, args.output_dir)
    _warn_about_credentials(exported, args.include_credentials)
    return 0


def _write(exported: list[export.Exported], output_dir: Path | None) -> None:
    if output_dir is None:
        sys.stdout.write(dump(item.manifest for item in exported))
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for item in exported:
        note = export.PLACEHOLDER_NOTE if item.has_placeholders else ""
        # Live callback passwords stay readable by their owner only.
        mode = 0o600 if item.holds_secrets else 0o644
        path = output_dir / item.file_name
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as file:
            file.write(note + dump([item.manifest]))
    print(f"wrote {len(exported)} file(s) to {output_dir}", file=sys.stderr)


def _warn_about_credentials(exported: list[export.Exported], included: bool) -> None:
    secrets = [item.manifest["metadata"]["name"] for item in exported if item.has_placeholders]
    if secrets:
        print(
            f"note: {len(secrets)} Secret(s) have empty callback credentials to fill in "
            f"({', '.join(secrets)}); until then their callbacks report CredentialsInvalid "
            "and ThingSpace is left untouched",
            file=sys.stderr,
        )
    if included and any(item.holds_secrets for item in exported):
        print(
            "note: the output holds live callback passwords: do not commit it unencrypted",
            file=sys.stderr,
        )


def run_diff(args: argparse.Namespace) -> int:
    manifests = load(args.filename)
    from_the_cluster = _cluster_accounts(args, {m.name for m in manifests.accounts})
    manifests.accounts += [found.manifest for found in from_the_cluster]
    if not (manifests.callbacks or manifests.accounts or args.account):
        raise CommandError("no ThingSpaceCallback or ThingSpaceAccount in the given files")
    given = _given_credentials(args, os.environ)
    resolution = diff.resolve(
        manifests,
        args.namespace,
        args.operator_namespace,
        given.values if given is not None else None,
        credentials_from_manifests=args.credentials_from_manifests,
    )
    resolution.accounts.update(args.account)
    if given is not None:
        resolution.credentials.update(dict.fromkeys(args.account, given.values))
    for found in from_the_cluster:  # its own Secret, unless credentials were given
        resolution.credentials.setdefault(found.spec.account_name, found.credentials.values)
    wanted = [(a, c) for a, c in resolution.credentials.items() if a in resolution.accounts]
    live = asyncio.run(read_live(args.api_url, wanted, args.timeout)) if wanted else {}
    rows = diff.plan(resolution, live, prune=args.prune)
    sys.stdout.write(diff.as_json(rows) + "\n" if args.output == "json" else diff.as_table(rows))
    return diff.exit_code(rows)


def _cluster_accounts(args: argparse.Namespace, in_files: set[str]) -> list[ClusterAccount]:
    """The ``--account-ref`` accounts the files do not hold, read from the cluster."""
    names = [name for name in args.account_ref if name not in in_files]
    if not names:
        return []
    api = _kubernetes(args)
    return [from_cluster(api, name, args.operator_namespace) for name in names]


def run_status(args: argparse.Namespace) -> int:
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(_kubernetes(args))
    try:
        if args.namespace:
            callbacks = custom.list_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL)
        else:
            callbacks = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        accounts = _accounts_if_allowed(custom)
    except kubernetes.client.exceptions.ApiException as exc:
        hint = " (may you list them cluster-wide? try -n NAMESPACE)" if exc.status == 403 else ""
        raise CommandError(f"reading ThingSpaceCallbacks: HTTP {exc.status}{hint}") from None
    groups = status.group(callbacks.get("items") or [], accounts)
    sys.stdout.write(
        status.as_json(groups) + "\n" if args.output == "json" else status.as_text(groups)
    )
    return 0


def _accounts_if_allowed(custom: "kubernetes.client.CustomObjectsApi") -> list[Any]:
    """ThingSpaceAccounts are cluster-scoped: a team member may not list them."""
    import kubernetes

    try:
        found: Any = custom.list_cluster_custom_object(GROUP, VERSION, ACCOUNT_PLURAL)
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status in (403, 404):
            return []
        raise
    return list(found.get("items") or [])


def _kubernetes(args: argparse.Namespace) -> "kubernetes.client.ApiClient":
    """The cluster of the kubeconfig (``--kubeconfig``, KUBECONFIG or ~/.kube/config), as
    kubectl resolves it; kubectl does not pass its own flags on to plugins."""
    import kubernetes

    try:
        return kubernetes.config.new_client_from_config(  # type: ignore[no-any-return]
            config_file=args.kubeconfig, context=args.context
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise CommandError(f"no usable kubeconfig: {exc}") from None


def kubectl_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kubectl thingspace",
        description="ThingSpace callback registrations: export, diff and status.",
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl thingspace export|diff|plan|status`` (kubectl finds ``kubectl-thingspace``
    on PATH)."""
    return dispatch(kubectl_parser().parse_args(argv))
