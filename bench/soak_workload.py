"""The chaos soak's workload: ThingSpaceCallbacks created, changed and deleted across
namespaces and accounts (one account by ``accountRef``, Authoritative), credentials Secrets
rotated, deleted and re-created, registrations changed and planted behind the operator's
back. It also keeps what the invariants need: every URL declared and since when it may be
written, the URLs nobody may ever deregister, every secret value used.
"""

import contextlib
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import yaml

from tests.e2e.cluster import LABEL, SimulatorApi
from tests.e2e.controlplane import Cluster
from thingspace_operator.thingspace.services import CALLBACK_SERVICE_NAMES

SERVICES = [s for s in CALLBACK_SERVICE_NAMES if s != "AlertsService"]
SLOT_SERVICES = SERVICES[:12]  # what callbacks declare
FOREIGN_SERVICES = SERVICES[12:16]  # only ever planted behind the operator's back
CREDENTIAL_SECRETS = ("creds-a", "creds-b")
LISTENER_SECRET = "listener-auth"
ACCOUNT_SECRET = "soak-account-creds"
MAX_WRONG_PER_USER = 4  # the simulator locks at 5 consecutive: the harness never gets there


@dataclass(frozen=True)
class Callback:
    namespace: str
    name: str
    account: str
    service: str
    by_ref: bool
    url: str
    secret: str
    auth: bool
    suspend: bool = False
    observe: bool = False
    orphan: bool = False

    @property
    def writable(self) -> bool:
        return not (self.suspend or self.observe)


@dataclass(frozen=True)
class CredentialSet:
    app_key: str
    app_secret: str
    username: str
    password: str

    def data(self) -> dict[str, str]:
        return {
            "appKey": self.app_key,
            "appSecret": self.app_secret,
            "username": self.username,
            "password": self.password,
        }


def credential_sets(seed: int, count: int = 3) -> list[CredentialSet]:
    rng = random.Random(f"creds-{seed}")
    return [
        CredentialSet(f"soak-app-{i}", _secret(rng), f"soak-user-{i}", _secret(rng))
        for i in range(count)
    ]


def _secret(rng: random.Random) -> str:
    return f"S3cr3t{rng.getrandbits(64):016x}"  # distinctive: a leak is found by substring


class Workload:
    def __init__(
        self,
        plane: Cluster,
        sim: SimulatorApi,
        seed: int,
        namespaces: list[str],
        release_namespace: str,
        account_name: str,
        n: int,
    ) -> None:
        self.plane, self.sim, self.n, self.seed = plane, sim, n, seed
        self.namespaces, self.release_namespace = namespaces, release_namespace
        self.account_name = account_name  # the ThingSpaceAccount
        rng = random.Random(f"accounts-{seed}")
        self.inline_accounts = [f"{rng.randrange(10**9, 10**10):010d}-00001" for _ in range(3)]
        self.auth_account = f"{rng.randrange(10**9, 10**10):010d}-00001"
        self.sets = credential_sets(seed)
        self.lock = threading.RLock()
        self.callbacks: dict[tuple[str, str], Callback] = {}
        self.deleting: dict[tuple[str, str], tuple[str, str]] = {}  # object -> its slot
        self.urls: dict[str, float | None] = {}  # URL -> writable since (None: never yet)
        self.never_deregister: set[str] = set()  # may be left live, must never be removed
        # Secret (namespace, name) -> the credential set it should hold; faulted: wrong now.
        self.holding: dict[tuple[str, str], int] = {}
        self.faulted: set[tuple[str, str]] = set()
        self.absent: set[tuple[str, str]] = set()
        self.listener: dict[str, str] = {}  # namespace -> listener password
        self.wrong_per_user: Counter[str] = Counter()
        self.secret_values: set[str] = {s.app_secret for s in self.sets} | {
            s.password for s in self.sets
        }
        self.counts: Counter[str] = Counter()
        self.pending: list[tuple[float, str, tuple[str, str]]] = []  # (due, action, secret)
        self._serial = 0

    # --- the cluster --------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, patience: float = 90) -> str:
        """kubectl, retried while the API server restarts (bounded by ``patience``)."""
        deadline = time.monotonic() + patience
        while True:
            done = self.plane.kubectl(*args, input=input, check=False)
            if done.returncode == 0:
                return str(done.stdout)
            if time.monotonic() > deadline:
                raise RuntimeError(f"kubectl {' '.join(args[:3])} kept failing: {done.stderr}")
            time.sleep(1)

    def apply(self, *manifests: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))

    def setup(self) -> None:
        """Secrets in every namespace, the Authoritative ThingSpaceAccount."""
        rng = random.Random(f"setup-{self.seed}")
        for namespace in self.namespaces:
            for name in CREDENTIAL_SECRETS:
                self.holding[(namespace, name)] = rng.randrange(len(self.sets))
                self._apply_secret((namespace, name))
            self._set_listener(namespace, rng)
        self.holding[(self.release_namespace, ACCOUNT_SECRET)] = 0
        self._apply_secret((self.release_namespace, ACCOUNT_SECRET))
        self.apply(
            {
                "apiVersion": "thingspace.io/v1alpha1",
                "kind": "ThingSpaceAccount",
                "metadata": {"name": self.account_name},
                "spec": {
                    "accountName": self.auth_account,
                    "credentialsSecretRef": {
                        "name": ACCOUNT_SECRET,
                        "namespace": self.release_namespace,
                    },
                    "namespaces": self.namespaces,
                    "callbackPolicy": "Authoritative",
                },
            }
        )

    def _apply_secret(self, key: tuple[str, str], data: dict[str, str] | None = None) -> None:
        namespace, name = key
        values = data or self.sets[self.holding[key]].data()
        self.apply(_secret_manifest(namespace, name, values))

    def _set_listener(self, namespace: str, rng: random.Random) -> None:
        password = f"L{rng.getrandbits(64):016x}"
        with self.lock:
            self.secret_values.add(password)
            self.listener[namespace] = password
        self.apply(
            _secret_manifest(
                namespace, LISTENER_SECRET, {"username": f"listener-{namespace}"[:40],
                                             "password": password}
            )
        )  # fmt: skip

    def manifest(self, cb: Callback) -> dict[str, Any]:
        spec: dict[str, Any] = {"serviceName": cb.service, "url": cb.url}
        if cb.by_ref:
            spec["accountRef"] = {"name": self.account_name}
        else:
            spec["accountName"] = cb.account
            spec["credentialsSecretRef"] = {"name": cb.secret}
        if cb.auth:
            spec["callbackCredentialsSecretRef"] = {"name": LISTENER_SECRET}
        spec["suspend"] = cb.suspend
        spec["managementPolicy"] = "ObserveOnly" if cb.observe else "Manage"
        spec["deletionPolicy"] = "Orphan" if cb.orphan else "Delete"
        return {
            "apiVersion": "thingspace.io/v1alpha1",
            "kind": "ThingSpaceCallback",
            "metadata": {"name": cb.name, "namespace": cb.namespace},
            "spec": spec,
        }

    def _put(self, cb: Callback) -> None:
        """Apply ``cb``; its URL may be written from now on only if it is writable now."""
        with self.lock:
            if cb.writable:
                if self.urls.get(cb.url) is None:
                    self.urls[cb.url] = time.monotonic()  # before the apply: conservative
            else:
                self.urls.setdefault(cb.url, None)
            self.callbacks[(cb.namespace, cb.name)] = cb
        self.apply(self.manifest(cb))

    def _url(self, namespace: str, name: str) -> str:
        self._serial += 1
        return f"https://listener.example.com/{namespace}/{name}/{self._serial}"

    # --- operations -----------------------------------------------------------------------

    def create(self, rng: random.Random) -> None:
        taken = {(c.account, c.service) for c in self.callbacks.values()}
        taken |= set(self.deleting.values())
        accounts = [*self.inline_accounts, self.auth_account]
        free = [(a, s) for a in accounts for s in SLOT_SERVICES if (a, s) not in taken]
        if not free:
            return
        account, service = rng.choice(free)
        namespace = rng.choice(self.namespaces)
        self._serial += 1
        name = f"cb-{self._serial}"
        by_ref = account == self.auth_account
        roll = rng.random()
        cb = Callback(
            namespace, name, account, service, by_ref, self._url(namespace, name),
            rng.choice(CREDENTIAL_SECRETS), rng.random() < 0.3,
            suspend=roll < 0.08, observe=0.08 <= roll < 0.16, orphan=rng.random() < 0.15,
        )  # fmt: skip
        self._put(cb)

    def step(self, rng: random.Random) -> str:
        """One workload operation drawn from ``rng``; its kind."""
        self._flush_pending()
        count = len(self.callbacks)
        choices: list[tuple[str, float]] = [
            ("create", 4.0 if count < self.n else 0.5 if count < self.n * 1.2 else 0.0),
            ("delete", 2.5 if count > self.n // 2 else 0.0),
            ("update-url", 2.0), ("switch-secret", 1.0), ("suspend", 1.0), ("observe-only", 1.0),
            ("deletion-policy", 1.0), ("rotate-secret", 1.0), ("recreate-secret", 0.5),
            ("rotate-listener", 0.5), ("oob-change", 1.0), ("oob-delete", 0.5),
            ("plant-foreign", 0.4), ("plant-undeclared", 0.4),
        ]  # fmt: skip
        kinds, weights = zip(*choices, strict=True)
        kind: str = rng.choices(kinds, weights)[0]
        getattr(self, "_" + kind.replace("-", "_"))(rng)
        self.counts[kind] += 1
        return kind

    def _pick(self, rng: random.Random, inline: bool = False) -> Callback | None:
        keys = sorted(k for k, c in self.callbacks.items() if not (inline and c.by_ref))
        return self.callbacks[rng.choice(keys)] if keys else None

    def _create(self, rng: random.Random) -> None:
        self.create(rng)

    def _delete(self, rng: random.Random) -> None:
        cb = self._pick(rng)
        if cb is None:
            return
        with self.lock:
            del self.callbacks[(cb.namespace, cb.name)]
            self.deleting[(cb.namespace, cb.name)] = (cb.account, cb.service)
            if (cb.orphan or not cb.writable) and not cb.by_ref:
                # Left in ThingSpace on purpose: whatever of its own is live stays for ever
                # (an Authoritative account may prune it: not recorded for that one).
                self.never_deregister |= {
                    u for u in self.urls if f"/{cb.namespace}/{cb.name}/" in u
                }
        self.kubectl("-n", cb.namespace, "delete", "tscb", cb.name, "--wait=false",
                     "--ignore-not-found")  # fmt: skip

    def _update_url(self, rng: random.Random) -> None:
        if cb := self._pick(rng):
            self._put(replace(cb, url=self._url(cb.namespace, cb.name)))

    def _switch_secret(self, rng: random.Random) -> None:
        if cb := self._pick(rng, inline=True):
            other = next(s for s in CREDENTIAL_SECRETS if s != cb.secret)
            self._put(replace(cb, secret=other))

    def _suspend(self, rng: random.Random) -> None:
        if cb := self._pick(rng):
            # Turning it off comes with a new URL, which then must never be written.
            url = self._url(cb.namespace, cb.name) if not cb.suspend else cb.url
            self._put(replace(cb, suspend=not cb.suspend, url=url))

    def _observe_only(self, rng: random.Random) -> None:
        if cb := self._pick(rng):
            url = self._url(cb.namespace, cb.name) if not cb.observe else cb.url
            self._put(replace(cb, observe=not cb.observe, url=url))

    def _deletion_policy(self, rng: random.Random) -> None:
        if cb := self._pick(rng):
            self._put(replace(cb, orphan=not cb.orphan))

    def _secret_keys(self) -> list[tuple[str, str]]:
        return sorted(k for k in self.holding if k not in self.faulted and k not in self.absent)

    def _rotate_secret(self, rng: random.Random) -> None:
        with self.lock:
            keys = self._secret_keys()
            if not keys:
                return
            key = rng.choice(keys)
            self.holding[key] = (self.holding[key] + rng.randrange(1, len(self.sets))) % len(
                self.sets
            )
            self._apply_secret(key)

    def _recreate_secret(self, rng: random.Random) -> None:
        with self.lock:
            keys = self._secret_keys()
            if not keys:
                return
            key = rng.choice(keys)
            self.absent.add(key)
            self.pending.append((time.monotonic() + rng.uniform(2, 10), "recreate", key))
            self.kubectl("-n", key[0], "delete", "secret", key[1], "--ignore-not-found")

    def _rotate_listener(self, rng: random.Random) -> None:
        self._set_listener(rng.choice(self.namespaces), rng)

    def _oob_change(self, rng: random.Random) -> None:
        cb = self._pick(rng)
        if cb is None:
            return
        url = f"https://drift.example.com/{self._next()}"
        with self.lock:
            if not cb.by_ref:
                self.never_deregister.add(url)
        self.sim.request("PUT", f"registrations/{cb.account}/{cb.service}", {"url": url})

    def _oob_delete(self, rng: random.Random) -> None:
        cb = self._pick(rng)
        if cb is not None:
            with contextlib.suppress(OSError):  # 404: nothing was registered
                self.sim.request("DELETE", f"registrations/{cb.account}/{cb.service}")

    def _plant_foreign(self, rng: random.Random) -> None:
        account, service = rng.choice(self.inline_accounts), rng.choice(FOREIGN_SERVICES)
        url = f"https://foreign.example.com/{self._next()}"
        with self.lock:
            self.never_deregister.add(url)
        self.sim.request("PUT", f"registrations/{account}/{service}", {"url": url})

    def _plant_undeclared(self, rng: random.Random) -> None:
        service = rng.choice(FOREIGN_SERVICES)
        url = f"https://undeclared.example.com/{self._next()}"
        self.sim.request("PUT", f"registrations/{self.auth_account}/{service}", {"url": url})

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    # --- secrets under fault -----------------------------------------------------------

    def break_secret(self, pick: float, what: str) -> str:
        """Replace a credentials Secret with a wrong password or app secret (each value
        used once); the Secret's name, or "" when none can be broken now."""
        with self.lock:
            keys = self._secret_keys()
            if what == "password":
                keys = [
                    k for k in keys
                    if self.wrong_per_user[self.sets[self.holding[k]].username] < MAX_WRONG_PER_USER
                ]  # fmt: skip
            if not keys:
                return ""
            key = keys[int(pick * len(keys)) % len(keys)]
            good = self.sets[self.holding[key]]
            wrong = f"Wr0ng{secrets.token_hex(8)}"
            self.secret_values.add(wrong)
            if what == "password":
                self.wrong_per_user[good.username] += 1
            self.faulted.add(key)
            self._apply_secret(key, {**good.data(), what: wrong})
            return f"{key[0]}/{key[1]}"

    def fix_secret(self, name: str) -> None:
        namespace, secret = name.split("/")
        with self.lock:
            self.faulted.discard((namespace, secret))
            self._apply_secret((namespace, secret))

    def _flush_pending(self, everything: bool = False) -> None:
        with self.lock:
            due = [p for p in self.pending if everything or p[0] <= time.monotonic()]
            self.pending = [p for p in self.pending if p not in due]
            for _, _, key in due:
                self.absent.discard(key)
                self._apply_secret(key)

    def settle(self) -> None:
        """Before the quiet period: every Secret back, nothing pending."""
        self._flush_pending(everything=True)

    def forget_deleted(self) -> None:
        """Slots whose deleted callback is gone may be declared again."""
        listed = self.plane.kubectl("get", "tscb", "-A", "-o", "json", check=False)
        if listed.returncode != 0:
            return
        present = {
            (i["metadata"]["namespace"], i["metadata"]["name"])
            for i in yaml.safe_load(listed.stdout)["items"]
        }
        with self.lock:
            for key in [k for k in self.deleting if k not in present]:
                del self.deleting[key]


def _secret_manifest(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "stringData": data,
    }
