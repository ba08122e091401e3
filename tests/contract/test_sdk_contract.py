"""Contract: the official Verizon Python SDK (sdksio-verizon-apis-sdk) works against
thingspace-sim and parses every answer. If the simulator drifts from the documented API
shapes, the SDK's own models stop parsing and this test fails."""

import asyncio

import pytest
from verizon.configuration import Configuration, Environment, Server
from verizon.exceptions.connectivity_management_result_exception import (
    ConnectivityManagementResultException,
)
from verizon.http.auth.thingspace_oauth import ThingspaceOauthCredentials
from verizon.http.auth.vz_m2m_token import VZM2mTokenCredentials
from verizon.models.log_in_request import LogInRequest
from verizon.models.register_callback_request import RegisterCallbackRequest
from verizon.verizon_client import VerizonClient

from thingspace_operator.simulator import SimulatorServer

ACCOUNT = "0000123456-00001"
SDK_ENVIRONMENT = Environment.MOCK_SERVER_FOR_LIMITED_AVAILABILITY_SEE_QUICK_START


@pytest.fixture
def sdk_pointed_at(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Aim the SDK's mock-server environment at the simulator."""
    servers = dict(Configuration.environments[SDK_ENVIRONMENT])
    servers[Server.THINGSPACE] = f"{sim.url}/api"
    servers[Server.OAUTH_SERVER] = f"{sim.url}/api/ts/v1"
    monkeypatch.setitem(Configuration.environments, SDK_ENVIRONMENT, servers)


def sdk_round_trip() -> dict[str, object]:
    """Everything a user of the SDK does with callbacks, blocking, as the SDK is sync."""
    oauth = ThingspaceOauthCredentials(
        oauth_client_id="demo-app-key", oauth_client_secret="demo-app-secret"
    )
    client = VerizonClient(environment=SDK_ENVIRONMENT, thingspace_oauth_credentials=oauth)
    token = client.auth_managers["thingspace_oauth"].fetch_token()
    oauth = oauth.clone_with(oauth_token=token)
    client = VerizonClient(environment=SDK_ENVIRONMENT, thingspace_oauth_credentials=oauth)
    login = client.session_management.start_connectivity_management_session(
        LogInRequest(username="demo-user", password="demo-password")
    ).body
    session = VZM2mTokenCredentials(vz_m2m_token=login.session_token)
    client = VerizonClient(
        environment=SDK_ENVIRONMENT,
        thingspace_oauth_credentials=oauth,
        vz_m2m_token_credentials=session,
    )
    callbacks = client.connectivity_callbacks
    registered = callbacks.register_callback(
        ACCOUNT,
        RegisterCallbackRequest(
            name="CarrierService",
            url="https://listener.example.com/carrier",
            username="listener",
            password="pw",
        ),
    ).body
    listed = callbacks.list_registered_callbacks(ACCOUNT).body
    deregistered = callbacks.deregister_callback(ACCOUNT, "CarrierService").body
    try:
        callbacks.deregister_callback(ACCOUNT, "CarrierService")
        rejected = None
    except ConnectivityManagementResultException as exc:
        rejected = exc
    listed_after = callbacks.list_registered_callbacks(ACCOUNT).body
    logout = client.session_management.end_connectivity_management_session().body
    return {
        "token": token,
        "login": login,
        "registered": registered,
        "listed": listed,
        "deregistered": deregistered,
        "rejected": rejected,
        "listed_after": listed_after,
        "logout": logout,
    }


async def test_official_sdk_can_use_the_simulator(sdk_pointed_at: None) -> None:
    result = await asyncio.to_thread(sdk_round_trip)

    assert result["token"].access_token
    assert result["token"].expires_in > 3000
    assert len(result["login"].session_token) == 36
    assert (result["registered"].account_name, result["registered"].service_name) == (
        ACCOUNT,
        "CarrierService",
    )
    (listed,) = result["listed"]
    assert (listed.account_name, listed.service_name, listed.url) == (
        ACCOUNT,
        "CarrierService",
        "https://listener.example.com/carrier",
    )
    assert (listed.username, listed.password) == ("listener", "pw")
    assert result["deregistered"].service_name == "CarrierService"
    assert result["rejected"].error_code.endswith("NotRegistered")
    assert result["listed_after"] == []
    assert result["logout"].session_token == result["login"].session_token
