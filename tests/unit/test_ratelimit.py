"""The per-account call budget, on a fake clock: slots are spaced, bursts are bounded."""

import pytest

from thingspace_operator.thingspace.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_calls_are_spaced_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=4, clock=clock)
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_a_burst_goes_through_then_the_rate_applies() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_idle_time_refills_the_bucket_but_not_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=2, clock=clock)
    limiter.reserve()
    limiter.reserve()
    clock.now += 60
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]


def test_no_window_of_one_second_exceeds_rate_plus_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=5, burst=2, clock=clock)
    starts = sorted(clock.now + limiter.reserve() for _ in range(40))
    for first in starts:
        assert sum(1 for t in starts if first <= t < first + 1.0) <= 5 + 1


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=rate, burst=burst)
