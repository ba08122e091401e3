"""The chaos soak's schedule, drawn up front from the seed: when each fault strikes and with
what parameters, and when each workload operation runs with its own random stream. The same
seed gives the same schedule; what it meets (who leads at that moment) is the run's."""

import random
from dataclasses import dataclass, field

#: Every fault kind the soak injects; each runs ``per_hour`` times an hour (at least once).
FAULT_KINDS = (
    "leader-sigterm",
    "leader-kill9",
    "standby-kill9",
    "both-kill9",
    "partition-long",  # leader cut from the API server past the renew deadline
    "partition-short",  # ... and for less than it
    "apiserver-restart",
    "etcd-compaction",
    "ts-5xx-burst",
    "ts-429-retry-after",
    "ts-timeout",
    "ts-session-expiry",
    "ts-token-expiry",
    "ts-slow",
    "ts-lost-answer",  # a register applied by ThingSpace whose answer never arrives
    "rejected-login",  # a credentials Secret replaced with wrong values, then fixed
)
PER_HOUR = 5
RENEW_DEADLINE = 10.0  # the chart's
REQUEST_TIMEOUT = 15.0  # the chart's thingspace.requestTimeoutSeconds


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the chaos window opens
    kind: str
    hold: float  # how long it lasts (0: instantaneous)
    params: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    at: float
    index: int
    seed: int  # the operation's own random stream: choices do not shift with the others


def faults(seed: int, window: float) -> list[Fault]:
    """Each kind ``max(1, PER_HOUR * window / 3600)`` times at uniform random moments of
    the window (overlaps happen as they fall), leaving its last 10 % free of new faults."""
    rng = random.Random(f"faults-{seed}")
    times = max(1, round(PER_HOUR * window / 3600))
    drawn: list[Fault] = []
    for kind in FAULT_KINDS:
        for _ in range(times):
            drawn.append(_draw(rng, kind, rng.uniform(0.02, 0.9) * window))
    return sorted(drawn, key=lambda fault: (fault.at, fault.kind))


def _draw(rng: random.Random, kind: str, at: float) -> Fault:
    hold, params = 0.0, dict[str, float | int | str]()
    if kind == "partition-long":
        hold = RENEW_DEADLINE + rng.uniform(3, 10)
    elif kind == "partition-short":
        hold = rng.uniform(2, 5)  # + at most a retry period since the last renewal: < 10 s
    elif kind == "apiserver-restart":
        hold = rng.uniform(1, 15)  # down for this long: sometimes past the renew deadline
    elif kind == "ts-5xx-burst":
        params = {"status": rng.choice([500, 502, 503]), "count": rng.randint(5, 20)}
    elif kind == "ts-429-retry-after":
        params = {"retry_after": rng.randint(1, 5), "count": rng.randint(3, 10)}
    elif kind == "ts-timeout":
        params = {"delay": REQUEST_TIMEOUT + 2, "count": rng.randint(1, 3)}
    elif kind == "ts-slow":
        params = {"delay": round(rng.uniform(1, 4), 1), "count": rng.randint(5, 20)}
    elif kind == "ts-lost-answer":
        params = {"count": rng.randint(1, 2)}
    elif kind == "rejected-login":
        hold = rng.uniform(5, 20)
        params = {"secret": rng.random(), "what": rng.choice(["password", "appSecret"])}
    return Fault(round(at, 2), kind, round(hold, 2), params)


def ops(seed: int, window: float, every: float) -> list[Op]:
    """Workload operations about every ``every`` seconds, jittered."""
    rng = random.Random(f"ops-{seed}")
    drawn, at, index = [], rng.uniform(0, every), 0
    while at < window:
        drawn.append(Op(round(at, 2), index, rng.getrandbits(32)))
        at += rng.uniform(0.5, 1.5) * every
        index += 1
    return drawn
