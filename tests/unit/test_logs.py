"""Log lines about a resource carry its account and service."""

import logging

from thingspace_operator.logs import RegistrationFilter

IDENTITIES = {("iot", "qos"): ("0000123456-00001", "QoS")}


def record(ref: object = None) -> logging.LogRecord:
    rec = logging.LogRecord(
        "kopf.objects", logging.INFO, __file__, 1, "Handler succeeded", (), None
    )
    if ref is not None:
        rec.k8s_ref = ref
    return rec


def test_json_mode_adds_fields() -> None:
    rec = record({"namespace": "iot", "name": "qos"})
    assert RegistrationFilter(IDENTITIES.get, text=False).filter(rec)
    assert (rec.account, rec.service) == ("0000123456-00001", "QoS")
    assert rec.getMessage() == "Handler succeeded"


def test_text_mode_appends_to_the_message_once() -> None:
    rec = record({"namespace": "iot", "name": "qos"})
    flt = RegistrationFilter(IDENTITIES.get, text=True)
    flt.filter(rec)
    flt.filter(rec)  # a second handler must not append again
    assert rec.getMessage() == "Handler succeeded [account=0000123456-00001 service=QoS]"


def test_other_records_are_untouched() -> None:
    for rec in (record(), record({"namespace": "iot", "name": "unknown"})):
        assert RegistrationFilter(IDENTITIES.get, text=True).filter(rec)
        assert rec.getMessage() == "Handler succeeded"
        assert not hasattr(rec, "account")
