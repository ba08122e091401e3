"""Who owns a registration that several resources declare: oldest live claim wins."""

from thingspace_operator.kube.claims import (
    Claim,
    claim_key,
    claim_of,
    owner_among,
    rival_owner,
    successor,
)

OLD = Claim("2026-01-01T00:00:00Z", "team-a", "qos")
NEW = Claim("2026-02-01T00:00:00Z", "team-b", "qos")
SAME_TIME_LATER_NAME = Claim("2026-01-01T00:00:00Z", "team-a", "zzz")


def test_oldest_claim_owns_then_namespace_and_name_break_ties() -> None:
    assert owner_among([NEW, OLD, SAME_TIME_LATER_NAME]) == OLD
    assert owner_among([]) is None


def test_claims_being_deleted_do_not_own() -> None:
    deleting = Claim(OLD.created, OLD.namespace, OLD.name, deleting=True)
    assert owner_among([deleting, NEW]) == NEW
    assert owner_among([deleting]) is None


def test_rival_is_the_owner_when_it_is_not_me() -> None:
    assert rival_owner([OLD, NEW], NEW) == OLD
    assert rival_owner([OLD, NEW], OLD) is None
    assert rival_owner([OLD], OLD) is None


def test_successor_excludes_me() -> None:
    assert successor([OLD, NEW], OLD) == NEW
    assert successor([OLD], OLD) is None


def test_claim_key_and_claim_of() -> None:
    assert claim_key({"accountName": "A-1", "serviceName": "QoS"}) == ("A-1", "QoS")
    assert claim_key({"accountName": "A-1"}) is None
    meta = {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "t"}
    assert claim_of(meta, "ns") == Claim("2026-01-01T00:00:00Z", "ns", "x", deleting=True)
