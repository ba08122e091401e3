"""Facts about ThingSpace names that both the operator and the simulator rely on.

Sources are in ../shared/reference/thingspace-api.md (section 4.1). The CRD's enum for
``spec.serviceName`` must list exactly ``CALLBACK_SERVICE_NAMES`` (a test checks it).
"""

import re

#: Callback service names accepted by ``POST /api/m2m/v1/callbacks/{accountName}``.
#: The union of the Register and Deregister pages and the fullest community list; the
#: Deregister page's spelling ``AlertsService`` is kept beside ``AlertService``.
CALLBACK_SERVICE_NAMES: tuple[str, ...] = (
    "AlertService",
    "AlertsService",
    "CarrierService",
    "DevicePRLInformation",
    "DeviceProfileService",
    "DevicePromoUsage",
    "DeviceService",
    "DeviceSuspensionStatus",
    "DeviceUsage",
    "DiagnosticsService",
    "EnhancedConnectivityService",
    "ExtendedEnhancedConnectivityService",
    "ExternalProvisioningChanges",
    "IntelligenceService",
    "NetworkEventService",
    "NiddService",
    "PromoChanges",
    "PwnService",
    "QoS",
    "ResumeTrackingNotification",
    "SMSDeliveryConfirmation",
    "StateService",
    "SubscriptionNotificationService",
    "VIPCallbackService",
)

#: Billing account names: "usually numeric, and must include any leading zeros"
#: (e.g. ``0000123456-00001``); the API console also uses ``TestAccount-2``.
ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$"
ACCOUNT_NAME_MAX_LENGTH = 64
ACCOUNT_NAME_RE = re.compile(ACCOUNT_NAME_PATTERN)

#: ThingSpace rejects callback usernames and passwords longer than this (Register page).
CALLBACK_CREDENTIAL_MAX_LENGTH = 40

#: Ports ThingSpace allows in a listener URL (Register Callback Listener page).
ALLOWED_LISTENER_PORTS: frozenset[int] = frozenset(
    [80, 443, *range(9001, 9007), *range(50551, 50560), *range(28200, 28221)]
)
