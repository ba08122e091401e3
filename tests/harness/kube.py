"""An emulated Kubernetes API server (kmock) with the server behaviour kopf relies on.

kmock 0.8 stores objects and serves list/watch/patch/delete, but leaves out what a real
API server adds: resourceVersion, uid, creationTimestamp, generation (bumped on spec
changes), namespace from the URL, 422 for a failed JSON-patch test, ``watch=True`` as the
official client spells it, and kind/apiVersion on lists. This subclass adds them.
"""

import base64
import copy
import datetime
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jsonpatch
import kmock
from kmock._internal import k8s_views
from kmock._internal.references import resource as kmock_resource

from tests.crd_support import load_crd


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _contains_by_key(self: Any, key: object) -> bool:
    """kmock's object store has no ``__contains__``, so ``in`` scanned every object (one
    scan per write: quadratic over a benchmark). Exact keys are dict lookups."""
    if isinstance(key, tuple) and len(key) == 3 and isinstance(key[0], kmock_resource):
        return key in self._objects
    return any(stored == key for stored in self._objects)


k8s_views.ObjectsArray.__contains__ = _contains_by_key  # type: ignore[method-assign]


class KubernetesEmulator(kmock.KubernetesEmulator):
    _last_resource_version: int = 0
    _in_flight: dict[int, Any] | None = None
    #: Requests served, by (HTTP method, subresource or ""), for benchmarks.
    verb_counts: Counter[tuple[str, str]] | None = None
    #: Every request about Secrets: (method, namespace, name, query), to prove which
    #: Secrets the operator asked for.
    secret_requests: list[tuple[str, str | None, str | None, dict[str, str]]] | None = None
    #: Requests served, by (HTTP method, resource plural), to prove what was never asked.
    resource_counts: Counter[tuple[str, str]] | None = None

    #: The most connections kopf's client (User-Agent kopf/...) held open at once.
    kopf_connections_peak: int = 0
    _kopf_transports: set[Any] | None = None

    async def __call__(self, raw_request: Any) -> Any:
        transport = raw_request.transport
        if transport is not None and raw_request.headers.get("User-Agent", "").startswith("kopf/"):
            live = self._kopf_transports = self._kopf_transports or set()
            live.add(transport)
            if len(live) > self.kopf_connections_peak:  # pruned only then: cheap at scale
                live.difference_update([t for t in live if t.is_closing()])
                self.kopf_connections_peak = max(self.kopf_connections_peak, len(live))
        return await super().__call__(raw_request)

    def _next_resource_version(self) -> str:
        self._last_resource_version += 1
        return str(self._last_resource_version)

    async def _handle(self, request: Any) -> Any:
        # kmock matches every request against every request it recorded (quadratic cost
        # that stalls a run with thousands of requests); keep only those still in flight.
        counts = self.verb_counts = self.verb_counts if self.verb_counts is not None else Counter()
        method = str(request.method).upper().rsplit(".", 1)[-1]
        counts[(method, request.subresource or "")] += 1
        if request.resource is not None:
            by_resource = self.resource_counts = self.resource_counts or Counter()
            by_resource[(method, request.resource.plural)] += 1
        if request.resource is not None and request.resource.plural == "secrets":
            log = self.secret_requests = self.secret_requests or []
            log.append((method, request.namespace, request.name, dict(request.params)))
        in_flight = self._in_flight = self._in_flight or {}
        in_flight[id(request)] = request
        self._requests[:] = [r for r in self._requests if id(r) in in_flight]
        try:
            return await self._handle_in_flight(request)
        finally:
            in_flight.pop(id(request), None)

    async def _handle_in_flight(self, request: Any) -> Any:
        if (
            request.action != kmock.action.WATCH
            and request.method == kmock.method.GET
            and str(request.params.get("watch", "")).lower() in ("true", "1")
        ):
            object.__setattr__(request, "action", kmock.action.WATCH)  # frozen attrs class
        if request.resource is not None and request.subresource in (None, "status"):
            if request.resource.plural == "secrets" and isinstance(request.data, dict):
                encode_string_data(request.data)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._fill_server_metadata(request)
            elif request.action == kmock.action.UPDATE:
                self._stamp_update(request)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    def _fill_server_metadata(self, request: Any) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:10]
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault(
            "creationTimestamp",
            datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._next_resource_version()

    def _stamp_update(self, request: Any) -> None:
        version = self._next_resource_version()
        generation = self._next_generation(request)
        if isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = version
            if generation is not None:
                meta["generation"] = generation
        elif isinstance(request.data, list):
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )
            if generation is not None:
                request.data.append(
                    {"op": "add", "path": "/metadata/generation", "value": generation}
                )

    def _next_generation(self, request: Any) -> int | None:
        """A spec change through the main resource bumps metadata.generation."""
        key = (request.resource, request.namespace, request.name)
        if request.subresource is not None or key not in self.objects:
            return None
        current = self.objects[key].raw
        if isinstance(request.data, dict):
            new_spec = merge_patch(current.get("spec"), request.data.get("spec"))
            changed = "spec" in request.data and new_spec != current.get("spec")
        else:
            changed = any(str(op.get("path", "")).startswith("/spec") for op in request.data)
        if not changed:
            return None
        return int(current.get("metadata", {}).get("generation", 1)) + 1

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        """Find an object by its key instead of scanning them all (kmock's default)."""
        if (
            request.name is not None
            and request.resource is not None
            and (strict or request.namespace is not None)
        ):
            found = self.objects._objects.get((request.resource, request.namespace, request.name))
            return [found] if found is not None else []
        found = super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[misc]
        # Select before anything is serialised, as a real server does: a selecting list in a
        # cluster of large Secrets must not cost the emulator their whole size.
        selected = label_selector(request.params.get("labelSelector"))
        return [obj for obj in found if obj.deleted or selected(obj.raw)]

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """Like a real server, send only what changed after the listed resourceVersion.

        kmock replays every stored object at the start of a watch, so an object created
        between kopf's list and its watch would arrive twice and kopf would act twice.
        """
        since = str(request.params.get("resourceVersion") or "0")
        since_version = int(since) if since.isdigit() else 0
        selected = label_selector(request.params.get("labelSelector"))
        matching: set[tuple[str, str]] = set()  # objects this watch has reported as matching
        async for item in super()._serve_watch(request):
            if isinstance(item, dict) and item.get("type") == "ADDED":  # replays are ADDED
                version = str(item.get("object", {}).get("metadata", {}).get("resourceVersion"))
                if version.isdigit() and int(version) <= since_version:
                    if selected(item.get("object") or {}):
                        matching.add(_object_key(item["object"]))
                    continue
            if isinstance(item, dict) and item.get("object") is not None:
                item = _as_selected(item, selected, matching)
                if item is None:
                    continue
            yield item

    async def _serve_list(self, request: Any) -> Any:
        listing = await super()._serve_list(request)
        selected = label_selector(request.params.get("labelSelector"))
        listing["items"] = [item for item in listing.get("items") or () if selected(item)]
        listing["metadata"] = {"resourceVersion": str(self._last_resource_version)}
        info = self.resources.get(request.resource) if request.resource else None
        if info is not None and info.kind:
            group = request.resource.group
            version = request.resource.version
            listing["apiVersion"] = f"{group}/{version}" if group else version
            listing["kind"] = f"{info.kind}List"
        return listing


def label_selector(expression: str | None) -> Any:
    """A predicate for a label selector of equality terms (``k=v``, ``k!=v``, ``k``, ``!k``),
    as a real API server applies it; kmock ignores selectors."""
    terms = [term.strip() for term in (expression or "").split(",") if term.strip()]

    def selected(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in terms:
            if "!=" in term:
                key, value = term.split("!=", 1)
                if labels.get(key) == value:
                    return False
            elif "=" in term:
                key, value = term.replace("==", "=").split("=", 1)
                if labels.get(key) != value:
                    return False
            elif term.startswith("!"):
                if term[1:] in labels:
                    return False
            elif term not in labels:
                return False
        return True

    return selected


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _as_selected(
    event: dict[str, Any], selected: Any, matching: set[tuple[str, str]]
) -> dict[str, Any] | None:
    """The event a selecting watch sends: an object that stops matching is DELETED for it,
    one that starts matching is ADDED, others are not sent at all."""
    key = _object_key(event["object"])
    was, now = key in matching, event.get("type") != "DELETED" and selected(event["object"])
    if now:
        matching.add(key)
        return {**event, "type": "MODIFIED" if was else "ADDED"}
    matching.discard(key)
    return {**event, "type": "DELETED"} if was else None


def encode_string_data(secret: dict[str, Any]) -> None:
    """Like the API server: Secret ``stringData`` is write-only sugar for base64 ``data``."""
    string_data = secret.pop("stringData", None) or {}
    encoded = {k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}
    if encoded:
        secret["data"] = {**(secret.get("data") or {}), **encoded}


def declare_crd(emulator: kmock.KubernetesEmulator, crd: dict[str, Any]) -> str:
    """Serve the CRD's resource in discovery, as the API server does once it is applied."""
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    names = spec["names"]
    resource = f"{spec['group']}/{version}/{names['plural']}"
    emulator.resources[resource] = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=spec["scope"] == "Namespaced",
        shortnames=set(names.get("shortNames", [])),
        categories=set(names.get("categories", [])),
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    )
    return resource


@asynccontextmanager
async def emulated_kubernetes(
    host: str = "127.0.0.1", port: int | None = None
) -> AsyncIterator[KubernetesEmulator]:
    """An emulated API server with the built-in resources and the ThingSpaceCallback CRD."""
    emulator = KubernetesEmulator()
    server_kwargs: dict[str, Any] = {"host": host}
    if port is not None:
        server_kwargs["port"] = port
    async with emulator, kmock.Server(emulator, **server_kwargs):
        emulator.resources.load_bundled()  # kopf waits for v1/namespaces in discovery
        declare_crd(emulator, load_crd())
        yield emulator
