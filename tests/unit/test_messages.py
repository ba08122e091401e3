"""What the operator tells its user: log levels of reported states, the account in lines
about a callback by reference, the Secret to fix, and the operator's namespace. The same
read from a real operator process: tests/e2e/test_operator_messages.py."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from thingspace_operator.account_handlers import namespace_notice, note_left
from thingspace_operator.config import OperatorConfig
from thingspace_operator.drift import DriftSweep
from thingspace_operator.handlers import REPORTED_STATES, log_about, post_event, raise_for_retry
from thingspace_operator.kube.connection import KubeConnection
from thingspace_operator.kube.login import OwnNamespace, own_namespace
from thingspace_operator.kube.secrets import CredentialsNotFound
from thingspace_operator.model import InvalidSpec
from thingspace_operator.reconciler import (
    AccountNotAllowed,
    AccountRequired,
    Outcome,
    Reason,
    Runtime,
    _conflict,
    _suspended,
    failure_outcome,
)
from thingspace_operator.thingspace.errors import (
    AuthenticationFailed,
    RequestRejected,
    Unavailable,
)

CONFIG = OperatorConfig()
BILLING = "0000123456-00001"


def by_ref(name: str = "qos", status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": name},
        "spec": {"accountRef": {"name": "fleet"}, "serviceName": "QoS", "url": "https://a"},
        "status": status or {},
    }


# --- 1. a state someone chose is no ERROR ------------------------------------------------


def test_a_reported_state_ends_the_handler_and_a_fault_fails_it() -> None:
    """kopf logs a PermanentError as ERROR ("Handler ... failed permanently"): only for
    faults someone must fix, not for a suspended, conflicting or not allowed callback."""
    rival = type("Rival", (), {"ref": "team-b/older"})()
    spec = type("Spec", (), {"service_name": "QoS", "account_name": BILLING})()
    states = [
        _suspended(),
        _conflict(spec, rival),  # type: ignore[arg-type]
        failure_outcome(AccountNotAllowed("not allowed")),
        failure_outcome(AccountRequired("use accountRef")),
    ]
    assert {state.synced.reason for state in states} == REPORTED_STATES
    for state in states:
        raise_for_retry(state, 0, CONFIG)  # no kopf error: nothing at ERROR
    faults = [
        InvalidSpec("bad"),
        CredentialsNotFound("Secret team-a/creds not found"),
        AuthenticationFailed("login", "rejected"),
        RequestRejected("SomeError", "no"),
    ]
    for fault in faults:
        with pytest.raises(kopf.PermanentError):
            raise_for_retry(failure_outcome(fault), 0, CONFIG)
    with pytest.raises(kopf.TemporaryError):
        raise_for_retry(failure_outcome(Unavailable("HTTP 503")), 0, CONFIG)


def test_a_suspended_callback_is_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    body = kopf.Body({**by_ref(), "spec": {"accountName": BILLING, "serviceName": "QoS"}})
    caplog.set_level(logging.DEBUG, logger="thingspace_operator")
    post_event(body, _suspended(), {})
    reported = {"conditions": [{"type": "Synced", "status": "False", "reason": "Suspended"}]}
    post_event(body, _suspended(), reported)  # a later reconcile finds the same state
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            f"Suspended [account={BILLING} service=QoS team-a/qos]: spec.suspend is true: no "
            "ThingSpace calls until it is false",
        )
    ]


# --- 2. the billing account, never None --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "names", "expected"),
    [
        ({"accountName": BILLING}, {}, BILLING),  # the account it registers in
        ({}, {"fleet": BILLING}, BILLING),  # not registered yet: its account's
        ({}, {}, "ThingSpaceAccount/fleet"),  # the account is not known
    ],
)
def test_a_line_about_a_callback_by_reference_names_its_account(
    caplog: pytest.LogCaptureFixture,
    status: dict[str, Any],
    names: dict[str, str],
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="thingspace_operator")
    failed = failure_outcome(AccountNotAllowed("not allowed"))
    log_about(kopf.Body(by_ref(status=status)), failed, status, names, logging.WARNING, "R", "m")
    (record,) = caplog.records
    assert record.getMessage() == f"R [account={expected} service=QoS team-a/qos]: m"
    assert (record.account, record.service) == (expected, "QoS")  # type: ignore[attr-defined]


def test_kopf_lines_about_a_callback_by_reference_name_its_billing_account() -> None:
    sweep = DriftSweep(10.0)
    names = {"fleet": BILLING}
    sweep.account_names = lambda: names
    sweep.track(by_ref("new"))
    sweep.track(by_ref("moved", status={"accountName": "0000999999-00001"}))
    assert sweep.registration_of(("team-a", "new")) == (BILLING, "QoS")
    assert sweep.registration_of(("team-a", "moved")) == ("0000999999-00001", "QoS")
    names.clear()
    assert sweep.registration_of(("team-a", "new")) == ("ThingSpaceAccount/fleet", "QoS")


# --- 3. the operator's namespace, and accounts left to another release --------------------


def kubeconfig(path: Path, namespace: str | None) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "current-context": "x",
        "contexts": [
            {"name": "other", "context": {"namespace": "no"}},
            {"name": "x", "context": context},
        ],
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_namespace_is_the_pods_then_the_service_accounts_then_the_kubeconfigs(
    tmp_path: Path,
) -> None:
    service_account = tmp_path / "namespace"
    env = {"KUBECONFIG": str(kubeconfig(tmp_path / "config", "platform"))}
    found = own_namespace(env, service_account)
    assert found == OwnNamespace("platform", "the kubeconfig's current context")
    service_account.write_text("ops\n")
    assert own_namespace(env, service_account).name == "ops"
    assert own_namespace({**env, "POD_NAMESPACE": "pod"}, service_account) == OwnNamespace(
        "pod", "POD_NAMESPACE"
    )
    service_account.unlink()
    env = {"KUBECONFIG": str(kubeconfig(tmp_path / "config", None))}
    assert own_namespace(env, service_account).name == "default"
    (tmp_path / "config").write_text("{not: yaml: at all")
    assert own_namespace(env, service_account).name == "default"
    assert own_namespace({"KUBECONFIG": str(tmp_path / "absent")}, service_account).name == (
        "default"
    )


def test_the_start_line_names_the_namespace_its_source_and_the_rule() -> None:
    notice = namespace_notice(OwnNamespace("ops", "POD_NAMESPACE"))
    assert notice.startswith("Operator namespace: ops (from POD_NAMESPACE).")
    assert "credentialsSecretRef.namespace is ops or empty" in notice


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    connection = KubeConnection(kopf.ConnectionInfo(server="http://127.0.0.1:9"))
    runtime = Runtime.create(OperatorConfig(), connection)
    runtime.own_namespace = "default"
    yield runtime
    await runtime.close()


async def test_an_account_left_to_another_release_is_logged_once(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO while no callback here uses it (sharding), at WARNING once one does."""
    caplog.set_level(logging.DEBUG, logger="thingspace_operator")
    account = {"spec": {"credentialsSecretRef": {"name": "creds", "namespace": "platform"}}}
    note_left(runtime, "fleet", account)
    note_left(runtime, "fleet", account)
    runtime.inventory.callback_seen(by_ref())
    note_left(runtime, "fleet", account)
    note_left(runtime, "fleet", account)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.INFO, logging.WARNING]
    assert (
        caplog.records[1]
        .getMessage()
        .startswith(
            "ThingSpaceAccount fleet: its status is left to the release in namespace platform, "
            "where its credentialsSecretRef is; this operator's namespace is default. Callbacks "
            "this operator reconciles use it"
        )
    )


# --- 4. the Secret to fix, by namespace/name ---------------------------------------------


@pytest.mark.parametrize(
    ("stage", "keys"), [("oauth", "appKey/appSecret"), ("login", "username/password")]
)
def test_authentication_failed_names_the_secret(stage: str, keys: str) -> None:
    failed: Outcome = failure_outcome(
        AuthenticationFailed(stage, "rejected"), secret="team-a/creds"
    )
    assert failed.synced.reason == Reason.AUTHENTICATION_FAILED
    assert f"Fix {keys} in Secret team-a/creds;" in failed.synced.message
    unknown = failure_outcome(AuthenticationFailed(stage, "rejected"))
    assert f"Fix {keys} in the credentials Secret;" in unknown.synced.message
