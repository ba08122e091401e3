"""The pure parts of export, diff and status: names, planning rows, masking, grouping."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from thingspace_operator.gitops import diff, export, status
from thingspace_operator.gitops.manifests import (
    Manifest,
    ManifestError,
    dump,
    load,
    secret_values,
)
from thingspace_operator.model import CallbackSpec
from thingspace_operator.thingspace.errors import Unavailable
from thingspace_operator.thingspace.models import Callback

ACCOUNT = "0000123456-00001"


def test_resource_names_are_stable_dns_names() -> None:
    callback = Callback(ACCOUNT, "SMSDeliveryConfirmation", "https://x.example.com")
    assert export.resource_name(callback) == "smsdeliveryconfirmation-0000123456-00001"
    assert export.resource_name(Callback("TestAccount_2", "QoS", "u")) == "qos-testaccount-2"


def test_export_sorts_and_uses_account_refs() -> None:
    callbacks = [
        Callback(ACCOUNT, "QoS", "https://b"),
        Callback(ACCOUNT, "DeviceUsage", "https://a"),
    ]
    options = export.ExportOptions(account_refs={ACCOUNT: "fleet"})
    exported, skipped = export.export(callbacks, options)
    assert skipped == []
    assert [e.file_name for e in exported] == [
        "deviceusage-0000123456-00001.thingspacecallback.yaml",
        "qos-0000123456-00001.thingspacecallback.yaml",
    ]
    assert exported[0].manifest["spec"] == {
        "accountRef": {"name": "fleet"},
        "serviceName": "DeviceUsage",
        "url": "https://a",
    }


def test_load_reads_lists_and_directories_and_ignores_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text(
        yaml.safe_dump_all(
            [
                {"kind": "ConfigMap", "metadata": {"name": "x"}},
                {
                    "kind": "List",
                    "items": [{"kind": "ThingSpaceCallback", "metadata": {"name": "c"}}],
                },
            ]
        )
    )
    (tmp_path / "README.md").write_text("not a manifest: {")
    found = load([tmp_path])
    assert [m.name for m in found.callbacks] == ["c"]
    (tmp_path / "broken.yaml").write_text("a: [")
    with pytest.raises(ManifestError, match=r"broken\.yaml"):
        load([tmp_path])


def resolution(*declared: tuple[str, str, Any]) -> diff.Resolution:
    found = diff.Resolution(accounts={ACCOUNT})
    for name, service, credentials in declared:
        spec = CallbackSpec.parse(
            {
                "accountName": ACCOUNT,
                "credentialsSecretRef": {"name": "c"},
                "serviceName": service,
                "url": "https://new.example.com",
            }
        )
        found.declared.append(
            diff.Declared(Manifest("f.yaml", {}), f"team/{name}", spec, ACCOUNT, credentials)
        )
    return found


def test_changed_credentials_are_masked_and_unknown_ones_are_not_compared() -> None:
    live = {ACCOUNT: [Callback(ACCOUNT, "QoS", "https://new.example.com", "old-user", "old-pass")]}
    rows = diff.plan(resolution(("qos", "QoS", ("new-user", "new-pass"))), live)
    assert [r.step for r in rows] == [diff.Step.REREGISTER]
    assert rows[0].changes == (
        diff.Change("username", "*****", "*****"),
        diff.Change("password", "*****", "*****"),
    )
    output = diff.as_table(rows) + diff.as_json(rows)
    assert not any(secret in output for secret in ("old-user", "old-pass", "new-user", "new-pass"))
    unknown = diff.plan(resolution(("qos", "QoS", None)), live)
    assert unknown[0].step is diff.Step.IN_SYNC
    assert "not compared" in unknown[0].detail


def test_every_claimant_of_a_registration_reports_the_conflict() -> None:
    rows = diff.plan(resolution(("a", "QoS", ("", "")), ("b", "QoS", ("", ""))), {ACCOUNT: []})
    assert [(r.resource, r.step) for r in rows] == [
        ("team/a", diff.Step.CONFLICT),
        ("team/b", diff.Step.CONFLICT),
    ]
    assert diff.exit_code(rows) == 2


def test_a_failed_list_is_an_error_for_each_claimant_and_exit_1() -> None:
    rows = diff.plan(resolution(("a", "QoS", ("", ""))), {ACCOUNT: Unavailable("HTTP 503")})
    assert [r.step for r in rows] == [diff.Step.ERROR]
    assert "HTTP 503" in rows[0].detail
    assert diff.exit_code(rows) == 1


def test_undeclared_registrations_are_kept_unless_pruning() -> None:
    live = {ACCOUNT: [Callback(ACCOUNT, "DeviceUsage", "https://u:p@old.example.com")]}
    kept = diff.plan(resolution(), live)
    assert [r.step for r in kept] == [diff.Step.KEEP]
    assert diff.exit_code(kept) == 0
    pruned = diff.plan(resolution(), live, prune=True)
    assert [r.step for r in pruned] == [diff.Step.DEREGISTER]
    assert pruned[0].changes == (diff.Change("url", "https://old.example.com", "(unset)"),)
    assert diff.exit_code(pruned) == 2


def test_json_output_summarises_steps() -> None:
    rows = diff.plan(resolution(("a", "QoS", ("", ""))), {ACCOUNT: []})
    document = json.loads(diff.as_json(rows))
    assert document["changes"] is True
    assert document["summary"] == {"register": 1}


def test_status_groups_callbacks_by_account_with_unmanaged_registrations() -> None:
    ready = {"conditions": [{"type": "Ready", "status": "True", "reason": "Registered"}]}
    callbacks = [
        {
            "metadata": {"name": "qos", "namespace": "team"},
            "spec": {"accountRef": {"name": "fleet"}, "serviceName": "QoS", "url": "https://q"},
            "status": ready,
        },
        {
            "metadata": {"name": "lost", "namespace": "team"},
            "spec": {"accountRef": {"name": "gone"}, "serviceName": "QoS", "url": "https://q"},
        },
    ]
    accounts = [
        {
            "metadata": {"name": "fleet"},
            "spec": {"accountName": ACCOUNT},
            "status": {
                **ready,
                "registrations": [
                    {"serviceName": "QoS", "url": "https://q", "managedBy": "team/qos"},
                    {"serviceName": "DeviceUsage", "url": "https://d", "managedBy": ""},
                ],
            },
        }
    ]
    groups = status.group(callbacks, accounts)
    assert [g.account for g in groups] == [ACCOUNT, "(ThingSpaceAccount gone, not found)"]
    assert groups[0].unmanaged == [{"serviceName": "DeviceUsage", "url": "https://d"}]
    assert [(c.resource, c.ready) for c in groups[0].callbacks] == [("team/qos", "True")]
    assert groups[1].callbacks[0].ready == "Unknown"
    text = status.as_text(groups)
    assert "(unmanaged)" in text
    assert f"ACCOUNT {ACCOUNT}  (ThingSpaceAccount fleet: Ready=True Registered)" in text
    assert groups[0].accounts == [{"name": "fleet", "ready": "True", "reason": "Registered"}]


def test_export_leaves_out_what_it_cannot_write_safely() -> None:
    callbacks = [
        Callback(ACCOUNT, "QoS", "https://bob:hunter2@listener.example.com"),
        Callback(ACCOUNT, "NoSuchService", "https://listener.example.com"),
    ]
    exported, skipped = export.export(callbacks, export.ExportOptions())
    assert exported == []
    assert "not a service name" in skipped[0]  # NoSuchService sorts first
    assert "URL carries credentials" in skipped[1]
    assert "hunter2" not in " ".join(skipped)
    included, _ = export.export(callbacks[:1], export.ExportOptions(include_credentials=True))
    assert included[0].manifest["spec"]["url"] == callbacks[0].url


def test_accounts_that_differ_only_in_case_never_share_a_file() -> None:
    callbacks = [
        Callback("TestAccount-2", "QoS", "https://listener.example.com/a"),
        Callback("testaccount-2", "QoS", "https://listener.example.com/b"),
    ]
    exported, skipped = export.export(callbacks, export.ExportOptions())
    assert [e.manifest["spec"]["accountName"] for e in exported] == ["TestAccount-2"]
    assert "name of account TestAccount-2's" in skipped[0]


def test_strings_a_yaml_reader_could_take_for_numbers_or_booleans_are_quoted() -> None:
    """kubectl's YAML reader takes 1e5 for a number and y for true (tests/e2e/test_gitops.py
    reads this output back with kubectl)."""
    text = dump([{"accountName": "1e5", "flag": "y", "plain": "0000123456-00001"}])
    assert text == "accountName: '1e5'\nflag: 'y'\nplain: 0000123456-00001\n"


def test_unknown_callback_credentials_over_none_live_are_a_change() -> None:
    live = {ACCOUNT: [Callback(ACCOUNT, "QoS", "https://new.example.com")]}
    rows = diff.plan(resolution(("qos", "QoS", None)), live)
    assert [r.step for r in rows] == [diff.Step.REREGISTER]
    assert diff.Change("password", "(unset)", "*****") in rows[0].changes
    assert "\\0" not in diff.as_table(rows) + diff.as_json(rows)


def test_invalid_manifests_still_hold_their_registration_against_pruning() -> None:
    found = resolution()
    found.errors.append(diff.Row(ACCOUNT, "QoS", diff.Step.ERROR, "bad spec", "team/q"))
    live = {ACCOUNT: [Callback(ACCOUNT, "QoS", "https://q")]}
    rows = diff.plan(found, live, prune=True)
    assert [r.step for r in rows] == [diff.Step.ERROR]


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"kind": "List", "items": {"a": 1}}], "items are not a list"),
        ([{"kind": "List", "items": ["x"]}], "not a mapping"),
        ([{"kind": "ThingSpaceCallback", "metadata": ["x"]}], "metadata is not a mapping"),
        (["just a string"], "not a mapping"),
    ],
)
def test_malformed_documents_are_errors_naming_the_file(
    tmp_path: Path, documents: list[Any], message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    with pytest.raises(ManifestError, match=message):
        load([path])


def test_yaml_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: 1\nb: [\n")
    with pytest.raises(ManifestError, match=r"line 3, column 1"):
        load([path])


def test_the_same_object_twice_counts_once_and_different_content_is_an_error(
    tmp_path: Path,
) -> None:
    callback = {"kind": "ThingSpaceCallback", "metadata": {"name": "c", "namespace": "t"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(callback))
    assert len(load([tmp_path, path]).callbacks) == 1
    other = tmp_path / "sub"
    other.mkdir()
    (other / "c.yaml").write_text(yaml.safe_dump({**callback, "spec": {"url": "x"}}))
    with pytest.raises(ManifestError, match="declared differently"):
        load([tmp_path])


@pytest.mark.parametrize(
    "secret",
    [
        {"data": {"password": "not base64!"}},
        {"data": {"password": 123}},
        {"stringData": ["x"]},
    ],
)
def test_bad_secret_manifests_are_errors_without_values(
    tmp_path: Path, secret: dict[str, Any]
) -> None:
    manifest = Manifest("s.yaml", {"kind": "Secret", "metadata": {"name": "s"}, **secret})
    with pytest.raises(ManifestError, match="Secret s") as raised:
        secret_values(manifest)
    assert "base64!" not in str(raised.value)
