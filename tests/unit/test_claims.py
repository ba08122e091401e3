"""Who owns a registration that several resources declare: oldest live claim wins."""

from thingspace_operator.kube.claims import (
    Claim,
    claim_key,
    claim_of,
    claims_for,
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


def test_a_callback_by_account_ref_contests_the_same_registration_as_one_inline() -> None:
    """Both forms declare (account, service): the claims under each key count together."""
    inline = {"accountName": "0000123456-00001", "serviceName": "QoS"}
    by_ref = {"accountRef": {"name": "platform"}, "serviceName": "QoS"}
    assert claim_key(by_ref) == ("ThingSpaceAccount/platform", "QoS")
    older = claim_of({"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}, "team-a")
    younger = claim_of({"name": "b", "creationTimestamp": "2026-01-02T00:00:00Z"}, "team-b")
    claims = {claim_key(inline): [younger], claim_key(by_ref): [older]}
    names = {"platform": "0000123456-00001", "other": "0000999999-00001"}
    for key in (claim_key(inline), claim_key(by_ref)):
        assert sorted(claims_for(claims, names, key)) == [older, younger]
    assert claims_for(claims, {}, claim_key(by_ref)) == [older]  # account unknown yet
    assert claims_for(claims, names, ("0000999999-00001", "QoS")) == []
