"""``thingspace-operator export`` and ``diff``/``plan`` as processes against the simulator over
real HTTP: no cluster, no ThingSpace write, no secret value in any diff output."""

import asyncio
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEMO_CREDENTIALS
from tests.simctl import SimControl

ACCOUNT = "0000123456-00001"
LIVE_PASSWORD = "live-listener-pass"  # must never be printed
DECLARED_PASSWORD = "declared-listener-pass"
CREDENTIAL_ENV = {
    "THINGSPACE_APP_KEY": DEMO_CREDENTIALS["appKey"],
    "THINGSPACE_APP_SECRET": DEMO_CREDENTIALS["appSecret"],
    "THINGSPACE_USERNAME": DEMO_CREDENTIALS["username"],
    "THINGSPACE_PASSWORD": DEMO_CREDENTIALS["password"],
}
NEVER_PRINTED = (
    LIVE_PASSWORD,
    DECLARED_PASSWORD,
    DEMO_CREDENTIALS["appSecret"],
    DEMO_CREDENTIALS["password"],
)


class Done:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def steps(self) -> dict[tuple[str, str], str]:
        return {(r["account"], r["service"]): r["step"] for r in self.json()["registrations"]}


async def tool(sim_url: str, *args: str, credentials: bool = True) -> Done:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THINGSPACE_")}
    env["THINGSPACE_API_URL"] = sim_url
    if credentials:
        env.update(CREDENTIAL_ENV)
    process = await asyncio.create_subprocess_exec(
        str(Path(sysconfig.get_path("scripts")) / "thingspace-operator"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def control(sim: Any) -> SimControl:
    control = SimControl(sim.url)
    await control.set_registration(ACCOUNT, "QoS", url="https://listener.example.com/qos")
    await control.set_registration(
        ACCOUNT,
        "CarrierService",
        url="https://listener.example.com/carrier",
        username="listener",
        password=LIVE_PASSWORD,
    )
    await control.request("DELETE", "requests")
    return control


def write(path: Path, *manifests: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(manifests))
    return path


def callback(name: str, service: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceCallback",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "accountName": ACCOUNT,
            "credentialsSecretRef": {"name": "thingspace-credentials"},
            "serviceName": service,
            "url": url,
            **spec,
        },
    }


def callback_secret(name: str, username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "team"},
        "stringData": {"username": username, "password": password},
    }


def fleet_account(**spec: Any) -> dict[str, Any]:
    """The ThingSpaceAccount "fleet" of ACCOUNT."""
    return {
        "apiVersion": "thingspace.io/v1alpha1",
        "kind": "ThingSpaceAccount",
        "metadata": {"name": "fleet"},
        "spec": {
            "accountName": ACCOUNT,
            "credentialsSecretRef": {"name": "platform-credentials"},
            **spec,
        },
    }


def qos_by_ref() -> dict[str, Any]:
    """A QoS callback in namespace team that names its account through "fleet"."""
    manifest = callback("qos", "QoS", "https://listener.example.com/qos")
    del manifest["spec"]["accountName"], manifest["spec"]["credentialsSecretRef"]
    manifest["spec"]["accountRef"] = {"name": "fleet"}
    return manifest


async def writes(control: SimControl) -> int:
    counts = await control.counts()
    return sum(n for (endpoint, _), n in counts.items() if endpoint in ("register", "deregister"))


# --- export ------------------------------------------------------------------------------


async def test_export_writes_one_stable_file_per_resource_with_placeholder_credentials(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    out = tmp_path / "adopted"
    done = await tool(
        sim.url, "export", "--account", ACCOUNT, "-n", "team", "--output-dir", str(out)
    )
    assert done.code == 0, done.err
    assert sorted(p.name for p in out.iterdir()) == [
        "carrierservice-0000123456-00001-callback-credentials.secret.yaml",
        "carrierservice-0000123456-00001.thingspacecallback.yaml",
        "qos-0000123456-00001.thingspacecallback.yaml",
    ]
    qos = yaml.safe_load((out / "qos-0000123456-00001.thingspacecallback.yaml").read_text())
    assert qos["metadata"] == {"name": "qos-0000123456-00001", "namespace": "team"}
    assert qos["spec"] == {
        "accountName": ACCOUNT,
        "credentialsSecretRef": {"name": "thingspace-credentials"},
        "serviceName": "QoS",
        "url": "https://listener.example.com/qos",
    }
    secret_file = out / "carrierservice-0000123456-00001-callback-credentials.secret.yaml"
    secret = yaml.safe_load(secret_file.read_text())
    assert secret["stringData"] == {"username": "", "password": ""}
    assert secret["metadata"]["labels"] == {"thingspace.io/credentials": "true"}
    assert secret_file.read_text().startswith("# Fill in the listener's callback credentials")
    assert "empty callback credentials to fill in" in done.err
    everything = done.out + done.err + "".join(p.read_text() for p in out.iterdir())
    assert all(secret not in everything for secret in NEVER_PRINTED)
    assert await writes(control) == 0

    again = await tool(sim.url, "export", "--account", ACCOUNT, "-n", "team")
    assert again.code == 0, again.err
    assert list(yaml.safe_load_all(again.out)) == [
        yaml.safe_load(p.read_text()) for p in sorted(out.iterdir(), key=_document_order)
    ]


def _document_order(path: Path) -> tuple[str, bool]:
    stem = path.name.split(".")[0].removesuffix("-callback-credentials")
    return stem, path.name.endswith(".secret.yaml")


async def test_export_then_diff_finds_nothing_to_change_and_never_writes(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    out = tmp_path / "adopted"
    exported = await tool(
        sim.url, "export", "--account", ACCOUNT, "--include-credentials", "--output-dir", str(out)
    )
    assert exported.code == 0, exported.err
    assert "do not commit it unencrypted" in exported.err
    done = await tool(sim.url, "diff", "-f", str(out), "-o", "json")
    assert done.code == 0, done.out + done.err
    assert set(done.steps().values()) == {"in-sync"}
    assert await writes(control) == 0
    lists = (await control.counts()).get(("list", 200))
    assert lists == 2  # one per command, one account


async def test_an_unfilled_export_is_refused_by_diff_as_the_operator_would(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    out = tmp_path / "adopted"
    assert (await tool(sim.url, "export", "--account", ACCOUNT, "--output-dir", str(out))).code == 0
    done = await tool(sim.url, "plan", "-f", str(out))
    assert done.code == 1
    assert "has empty key(s) username, password" in done.out
    assert "no write" in done.out


async def test_exported_live_passwords_are_readable_by_their_owner_only(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    url_with_password = f"https://listener:{LIVE_PASSWORD}@listener.example.com/usage"
    await control.set_registration(ACCOUNT, "DeviceUsage", url=url_with_password)
    out = tmp_path / "adopted"
    done = await tool(
        sim.url, "export", "--account", ACCOUNT, "--include-credentials", "--output-dir", str(out)
    )
    assert done.code == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["carrierservice-0000123456-00001-callback-credentials.secret.yaml"] == 0o600
    assert modes["deviceusage-0000123456-00001.thingspacecallback.yaml"] == 0o600  # its URL
    assert modes["qos-0000123456-00001.thingspacecallback.yaml"] == 0o644
    assert "holds live callback passwords" in done.err


async def test_export_needs_an_account_and_credentials(sim: Any, control: SimControl) -> None:
    nothing = await tool(sim.url, "export")
    assert nothing.code == 1
    assert "--account" in nothing.err
    anonymous = await tool(sim.url, "export", "--account", ACCOUNT, credentials=False)
    assert anonymous.code == 1
    assert "THINGSPACE_" in anonymous.err


# --- diff --------------------------------------------------------------------------------

QOS = callback("qos", "QoS", "https://listener.example.com/qos")
CARRIER_SECRET = callback_secret("carrier-callback", "listener", LIVE_PASSWORD)
CARRIER = callback(
    "carrier",
    "CarrierService",
    "https://listener.example.com/carrier",
    callbackCredentialsSecretRef={"name": "carrier-callback"},
)


@pytest.mark.parametrize(
    ("manifests", "extra", "code", "expected"),
    [
        pytest.param(
            [QOS, CARRIER, CARRIER_SECRET],
            [],
            0,
            {"QoS": "in-sync", "CarrierService": "in-sync"},
            id="unchanged",
        ),
        pytest.param(
            [QOS, callback("usage", "DeviceUsage", "https://listener.example.com/usage")],
            [],
            2,
            {"QoS": "in-sync", "DeviceUsage": "register", "CarrierService": "keep"},
            id="new",
        ),
        pytest.param(
            [callback("qos", "QoS", "https://elsewhere.example.com/qos")],
            [],
            2,
            {"QoS": "re-register", "CarrierService": "keep"},
            id="changed-url",
        ),
        pytest.param(
            [CARRIER, callback_secret("carrier-callback", "listener", DECLARED_PASSWORD)],
            [],
            2,
            {"CarrierService": "re-register", "QoS": "keep"},
            id="changed-credentials",
        ),
        pytest.param(
            [QOS, {**QOS, "metadata": {"name": "qos-again", "namespace": "other-team"}}],
            [],
            2,
            {"QoS": "conflict", "CarrierService": "keep"},
            id="conflict",
        ),
        pytest.param(
            [QOS], ["--prune"], 2, {"QoS": "in-sync", "CarrierService": "deregister"}, id="prune"
        ),
        pytest.param(
            [
                QOS,
                callback(
                    "carrier", "CarrierService", "https://elsewhere.example.com", suspend=True
                ),
            ],
            [],
            0,
            {"QoS": "in-sync", "CarrierService": "skip"},
            id="suspended",
        ),
        pytest.param(
            [
                callback(
                    "qos",
                    "QoS",
                    "https://elsewhere.example.com/qos",
                    managementPolicy="ObserveOnly",
                )
            ],
            [],
            0,
            {"QoS": "observe", "CarrierService": "keep"},
            id="observe-only",
        ),
    ],
)
async def test_diff_exit_codes_and_steps(
    sim: Any,
    control: SimControl,
    tmp_path: Path,
    manifests: list[dict[str, Any]],
    extra: list[str],
    code: int,
    expected: dict[str, str],
) -> None:
    path = write(tmp_path / "manifests.yaml", *manifests)
    done = await tool(sim.url, "diff", "-f", str(path), "-o", "json", *extra)
    assert done.code == code, done.out + done.err
    steps = done.steps()
    assert {service: steps[(ACCOUNT, service)] for service in expected} == expected
    table = await tool(sim.url, "diff", "-f", str(path), *extra)
    assert table.code == code
    for output in (done.out, done.err, table.out, table.err):
        assert all(secret not in output for secret in NEVER_PRINTED)
    assert await writes(control) == 0


async def test_diff_shows_url_and_masked_credential_changes(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "m.yaml",
        callback(
            "carrier",
            "CarrierService",
            "https://user:pw@elsewhere.example.com/carrier",
            callbackCredentialsSecretRef={"name": "carrier-callback"},
        ),
        callback_secret("carrier-callback", "new-listener", DECLARED_PASSWORD),
    )
    done = await tool(sim.url, "diff", "-f", str(path), "-o", "json")
    row = next(r for r in done.json()["registrations"] if r["service"] == "CarrierService")
    assert row["changes"] == [
        {
            "field": "url",
            "before": "https://listener.example.com/carrier",
            "after": "https://elsewhere.example.com/carrier",
        },
        {"field": "username", "before": "*****", "after": "*****"},
        {"field": "password", "before": "*****", "after": "*****"},
    ]
    assert "new-listener" not in done.out
    assert "user:pw" not in done.out


async def test_diff_of_an_authoritative_account_prunes_and_resolves_account_refs(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    account = fleet_account(callbackPolicy="Authoritative", namespaces=["team"])
    path = write(tmp_path / "m.yaml", account, qos_by_ref())
    done = await tool(sim.url, "diff", "-f", str(path), "-o", "json")
    assert done.code == 2
    assert done.steps() == {(ACCOUNT, "QoS"): "in-sync", (ACCOUNT, "CarrierService"): "deregister"}


async def test_diff_reads_credentials_from_secret_manifests_in_the_files(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    app_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "thingspace-credentials", "namespace": "team"},
        "stringData": DEMO_CREDENTIALS,
    }
    path = write(tmp_path / "m.yaml", QOS, app_secret)
    opted_out = await tool(sim.url, "diff", "-f", str(path), credentials=False)
    assert opted_out.code == 1  # never a login with manifests' credentials unless asked
    assert "no credentials for account" in opted_out.out
    done = await tool(
        sim.url, "diff", "-f", str(path), "--credentials-from-manifests", credentials=False
    )
    assert done.code == 0, done.out + done.err
    assert "in-sync" in done.out


@pytest.mark.parametrize(
    ("manifests", "args", "message"),
    [
        pytest.param(
            [QOS], ["--credentials-file", "/nonexistent.yaml"], "no such file", id="no-file"
        ),
        pytest.param(
            [callback("bad", "NoSuchService", "https://x.example.com")],
            [],
            "serviceName",
            id="bad-spec",
        ),
        pytest.param(
            [
                {
                    **QOS,
                    "spec": {
                        "serviceName": "QoS",
                        "url": "https://x",
                        "accountRef": {"name": "gone"},
                    },
                }
            ],
            [],
            "ThingSpaceAccount gone is not in the given files",
            id="missing-account",
        ),
    ],
)
async def test_diff_exits_1_on_errors(
    sim: Any,
    control: SimControl,
    tmp_path: Path,
    manifests: list[Any],
    args: list[str],
    message: str,
) -> None:
    path = write(tmp_path / "m.yaml", *manifests)
    done = await tool(sim.url, "diff", "-f", str(path), *args)
    assert done.code == 1
    assert message in done.out + done.err


async def test_diff_without_credentials_or_with_rejected_ones_is_an_error(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    path = write(tmp_path / "m.yaml", QOS)
    anonymous = await tool(sim.url, "diff", "-f", str(path), credentials=False)
    assert anonymous.code == 1
    assert "no credentials for account" in anonymous.out
    wrong = write(
        tmp_path / "wrong.yaml",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {**DEMO_CREDENTIALS, "password": "wrong-password"},
        },
    )
    rejected = await tool(sim.url, "diff", "-f", str(path), "--credentials-file", str(wrong))
    assert rejected.code == 1
    assert "cannot list the account" in rejected.out
    assert "wrong-password" not in rejected.out + rejected.err
    logins = await control.request("GET", "logins")
    assert logins["failed"] == {"demo-user": 1}  # one login per credential set, never retried


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["diff"], id="no-filename"),
        pytest.param(["diff", "-f", "x.yaml", "-o", "yaml"], id="bad-output"),
        pytest.param(["diff", "-f", "x.yaml", "--timeout", "0"], id="bad-timeout"),
        pytest.param(["export", "--no-such-flag"], id="unknown-flag"),
        pytest.param(["export", "--account", ".."], id="account-dot-dot"),
        pytest.param(["export", "--account", "a/b"], id="account-with-slash"),
    ],
)
async def test_usage_errors_exit_1_never_2(sim: Any, args: list[str]) -> None:
    done = await tool(sim.url, *args)
    assert done.code == 1
    assert "error:" in done.err
    assert (await SimControl(sim.url).request("GET", "requests"))["total"] == 0


async def test_diff_of_nothing_is_an_error(sim: Any, control: SimControl, tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"kind": "ConfigMap"}))
    done = await tool(sim.url, "diff", "-f", str(tmp_path))
    assert done.code == 1
    assert "no ThingSpaceCallback or ThingSpaceAccount" in done.err


async def test_diff_checks_the_accounts_namespaces_as_the_operator_does(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    account = fleet_account(namespaces=["other-team"])
    done = await tool(sim.url, "diff", "-f", str(write(tmp_path / "m.yaml", account, qos_by_ref())))
    assert done.code == 1
    assert "does not allow namespace team" in done.out


async def test_a_malformed_secret_manifest_is_an_error_not_a_traceback(
    sim: Any, control: SimControl, tmp_path: Path
) -> None:
    secret = callback_secret("carrier-callback", "listener", "x")
    secret["data"] = {"password": "ENC[AES256_GCM,data:...]"}  # a SOPS-encrypted value
    path = write(tmp_path / "m.yaml", CARRIER, secret)
    done = await tool(sim.url, "diff", "-f", str(path))
    assert done.code == 1
    assert "Traceback" not in done.err
    assert "not valid base64" in done.err
